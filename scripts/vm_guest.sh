#!/usr/bin/env bash
# Inside the VM of scripts/vm.sh, as root: gives pycri writable tmpfs directories (an overlay
# upper dir cannot sit on the guest's overlayfs /tmp), mounts securityfs for AppArmor, then
# runs CMD... and returns its exit code. /var/lib/cni (host-local's IP allocations) gets one too:
# through the copy-on-write overlay the guest would see the host's allocations come and go
# (another run's pods on the host), and its leak check took one for its own.
set -euo pipefail
REPO=$PWD
# The checkout may itself lie below one of those directories (a CI clone in /tmp): hold it by
# a bind mount under /run (the guest's /run is a tmpfs), and bind it back at the same path once
# the tmpfs is over it.
HOLD=/run/pycri-checkout
mkdir -p "$HOLD"
mount --bind "$REPO" "$HOLD"
for d in /tmp /var/lib/pycri /run/pycri /var/lib/cni; do
  mkdir -p "$d"
  mount -t tmpfs -o mode=1777 tmpfs "$d"
done
if [ ! -d "$REPO/tests" ]; then
  mkdir -p "$REPO"
  mount --bind "$HOLD" "$REPO"
fi
umount "$HOLD"
cd "$REPO"
if ! mountpoint -q /sys/kernel/security; then
  mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
fi
exec "$@"
