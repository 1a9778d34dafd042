#!/usr/bin/env bash
# Installs pycri and what it needs on Debian/Ubuntu, as root. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  containernetworking-plugins  # bridge, host-local, portmap, loopback CNI plugins
  iptables iproute2            # portmap/bridge plugins and tests
  libseccomp2                  # seccomp filters (loaded with ctypes)
  busybox                      # dynamically linked busybox: test images
  docker-registry              # a real OCI registry on 127.0.0.1 for tests
  procps psmisc                # ps/pgrep in tests
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
