#!/usr/bin/env bash
# Builds hack/kstatus (the kstatus of one object, as Flux computes it) from Go modules, once, into a
# cache outside the work tree, keyed by the cli-utils version:  $KILN_CACHE/kstatus-<version>/kstatus
# Prints the binary's path on stdout as its last line; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLIV=v0.37.2    # sigs.k8s.io/cli-utils, as required by hack/kstatus/go.mod
src=$(sha256sum "$here/main.go" | cut -c1-12)
out="${KILN_CACHE:-$HOME/.cache/kiln}/kstatus-${CLIV}-${src}"
log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ -x "$out/kstatus" ]; then echo "$out/kstatus"; exit 0; fi
command -v go >/dev/null || { log "Go 1.26+ is required (https://go.dev/dl)"; exit 1; }
cd "$here"
pinned=$(go list -m -f '{{.Version}}' sigs.k8s.io/cli-utils)
[ "$pinned" = "$CLIV" ] || { log "hack/kstatus/go.mod pins cli-utils $pinned, build.sh says $CLIV"; exit 1; }
mkdir -p "$out"
log "building kstatus (cli-utils ${CLIV}) into $out"
CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$out/kstatus.tmp" .
mv "$out/kstatus.tmp" "$out/kstatus"
echo "$out/kstatus"
