#!/usr/bin/env bash
# Builds hack/noop-webhook (standard library only) once, into a cache outside the work tree, keyed by
# its source:  $KILN_CACHE/noop-webhook-<sha>/noop-webhook
# Prints the binary's path on stdout as its last line; progress goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src=$(cat "$here/main.go" "$here/go.mod" | sha256sum | cut -c1-12)
out="${KILN_CACHE:-$HOME/.cache/kiln}/noop-webhook-${src}"
if [ -x "$out/noop-webhook" ]; then echo "$out/noop-webhook"; exit 0; fi
command -v go >/dev/null || { echo "Go 1.26+ is required (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$out"
echo "[build] noop-webhook into $out" >&2
cd "$here"
CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" -o "$out/noop-webhook.tmp" .
mv "$out/noop-webhook.tmp" "$out/noop-webhook"
echo "$out/noop-webhook"
