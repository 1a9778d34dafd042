#!/usr/bin/env bash
# The pycri-vs-containerd benchmark in one command (as root, on Debian/Ubuntu):
#   bash bench/run.sh [--rounds 30] [--pods 50] [--idle 60] [--pull-rounds 5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
need=()
for p in containerd runc libc6-dev gcc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check matplotlib
exec python3 -m bench.run "$@"
