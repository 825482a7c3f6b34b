#!/usr/bin/env bash
# The Debian packages the local cluster's real node and the image builds need (`make setup` runs this):
# containerd, runc and the CNI plugins for the node, socat for its relays, iptables for kube-proxy,
# docker-registry for the local registry, buildah and mmdebstrap to build images without Docker, gcc for
# the pause binary, prometheus (and promtool) for the metrics tests. Installed only when missing and only
# as root; otherwise it says what to install, and `kiln cluster up` runs the simulated node alone. No
# service is started by the installation: the local cluster starts its own containerd and registry, on
# private sockets and 127.0.0.1, and the tests their own Prometheus.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables socat docker-registry buildah mmdebstrap prometheus
      iproute2 procps util-linux gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "[setup] not a Debian system: the real node needs ${missing[*]} (or their equivalents); without them" \
       "\`kiln cluster up\` runs the simulated node only" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[setup] the real node needs Debian packages that are missing: ${missing[*]}." >&2
  echo "[setup] Run \`sudo apt-get install --no-install-recommends ${missing[*]}\` (or \`make setup\` as root);" \
       "until then \`kiln cluster up\` runs the simulated node only." >&2
  exit 0
fi
echo "[setup] installing Debian packages: ${missing[*]}" >&2
# Debian's maintainer scripts would start containerd and the registry as services: not here.
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
