#!/usr/bin/env bash
# Builds the local control plane and its real node from Go modules, once, into a cache outside the
# work tree, keyed by version:  $KILN_CACHE/control-plane/<key>/bin/{etcd,kube-apiserver,...,kwok,
# kubelet,kube-proxy,pause}. pause is the pod sandbox's process, compiled from the C source that the
# k8s.io/kubernetes module carries (build/pause), as Kubernetes builds its pause image.
# Prints the bin directory on stdout as its last line; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KV=v1.36.3          # k8s.io/kubernetes (hack/k8s/go.mod)
ETCDV=v3.6.8        # go.etcd.io/etcd/server/v3, as pinned by k8s.io/kubernetes
KWOKV=v0.8.0        # sigs.k8s.io/kwok (hack/kwok/go.mod)
key="k8s-${KV}_etcd-${ETCDV}_kwok-${KWOKV}"
out="${KILN_CACHE:-$HOME/.cache/kiln}/control-plane/$key/bin"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kubelet kube-proxy pause)

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

missing=()
for b in "${bins[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
[ -f "$out/kwok-stages.yaml" ] || missing+=(kwok-stages.yaml)
if [ ${#missing[@]} -eq 0 ]; then echo "$out"; exit 0; fi

command -v go >/dev/null || { log "Go 1.26+ is required (https://go.dev/dl)"; exit 1; }
mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
maj=${KV#v}; maj=${maj%%.*}; min=${KV#v*.}; min=${min%%.*}
k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${KV} \
 -X k8s.io/component-base/version.gitMajor=${maj} -X k8s.io/component-base/version.gitMinor=${min} \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
etcd_ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCDV}"

# A ticker so that a cold build (10-25 minutes on 2 cores) visibly makes progress.
start=$SECONDS
( while sleep 30; do log "... still building ($(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s elapsed)"; done ) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true' EXIT

build() {  # build <module-dir> <name> <package> <ldflags>
  local dir=$1 name=$2 pkg=$3 ldflags=$4
  [ -x "$out/$name" ] && return 0
  log "building $name ($pkg) ..."
  local t=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  log "built $name in $((SECONDS - t))s"
}
log "cold build of the control plane into $out (first time only)"
build k8s etcd go.etcd.io/etcd/server/v3 "$etcd_ldflags"
build k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
build k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$k8s_ldflags"
build k8s kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$k8s_ldflags"
build k8s kubectl k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"
build k8s kubelet k8s.io/kubernetes/cmd/kubelet "$k8s_ldflags"
build k8s kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$k8s_ldflags"
build kwok kwok sigs.k8s.io/kwok/cmd/kwok "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOKV}"

# kwok >= 0.8 has no built-in stages: ship the upstream "fast" ones from the module cache.
kwokdir=$(cd "$here/kwok" && go mod download -json "sigs.k8s.io/kwok@${KWOKV}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
s="$kwokdir/kustomize/stage"
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
  cat "$s/$f"; echo '---'
done > "$out/kwok-stages.yaml"
if [ ! -x "$out/pause" ]; then
  k8sdir=$(cd "$here/k8s" && go mod download -json "k8s.io/kubernetes@${KV}" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  pausetag=$(sed -n 's/^TAG ?= *//p' "$k8sdir/build/pause/Makefile")
  log "building pause ${pausetag} (gcc -static, from k8s.io/kubernetes build/pause)"
  gcc -Os -Wall -Werror -static -DVERSION="v${pausetag}" -o "$out/pause.tmp" "$k8sdir/build/pause/linux/pause.c"
  strip "$out/pause.tmp" && mv "$out/pause.tmp" "$out/pause"
fi
"$out/kube-apiserver" --version >&2
log "control plane built in $((SECONDS - start))s"
echo "$out"
