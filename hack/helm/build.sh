#!/usr/bin/env bash
# Builds a pinned helm from Go modules (hack/helm/go.mod: `tool helm.sh/helm/v3/cmd/helm`), once,
# into a cache outside the work tree, keyed by version:  $KILN_CACHE/helm-<version>/helm
# Prints the binary's path on stdout as its last line; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HELMV=v3.21.4   # must match the require of helm.sh/helm/v3 in hack/helm/go.mod
out="${KILN_CACHE:-$HOME/.cache/kiln}/helm-${HELMV}"
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$out/helm" ]; then echo "$out/helm"; exit 0; fi
command -v go >/dev/null || { log "Go 1.26+ is required (https://go.dev/dl)"; exit 1; }
cd "$here"
pinned=$(go list -m -f '{{.Version}}' helm.sh/helm/v3)
[ "$pinned" = "$HELMV" ] || { log "hack/helm/go.mod pins helm $pinned, build.sh says $HELMV"; exit 1; }
# The Kubernetes version helm assumes without a cluster (helm template, lint): its client-go's, as
# helm's own Makefile sets it (client-go v0.X.Y is Kubernetes v1.X).
kv=$(go list -m -f '{{.Version}}' k8s.io/client-go); kminor=${kv#v0.}; kminor=${kminor%%.*}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELMV} \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${kminor} \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${kminor}"
mkdir -p "$out"
log "building helm ${HELMV} into $out (first time only, a few minutes)"
start=$SECONDS
CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "$ldflags" -o "$out/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$out/helm.tmp" "$out/helm"
"$out/helm" version --short >&2
log "built helm in $((SECONDS - start))s"
echo "$out/helm"
