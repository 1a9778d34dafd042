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
  procps psmisc util-linux     # ps/pgrep, script(1), ipcs in tests and critest images
  skopeo openssl               # image import and registry TLS tests
  nginx-light gcc libc6-dev    # critest images: nginx, static pause and setuid test binaries
  containerd runc              # the benchmark's baseline (its smoke test runs one round)
  # the VM leg (scripts/vm.sh): QEMU, AppArmor in the guest; its kernel: below
  qemu-system-x86 apparmor sudo
  # its systemd boot: Debian 12's 6.1 kernel (systemd 252 stalls on 6.12 under TCG),
  # systemd as PID 1 with the D-Bus system bus
  linux-image-amd64 systemd dbus
)
# The VM leg's guest kernel: one exact package from bookworm-backports (scripts/vm_kernel.sh),
# its source in a file of its own (backports packages are only installed by name).
. scripts/vm_kernel.sh
APT_PACKAGES+=("$VM_KERNEL_PACKAGE")
if [ "$(cat "$VM_KERNEL_SOURCE_FILE" 2>/dev/null)" != "$VM_KERNEL_SOURCE" ]; then
  printf '%s\n' "$VM_KERNEL_SOURCE" > "$VM_KERNEL_SOURCE_FILE"
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # Packages like nginx and docker-registry must not start system services here.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
fi

# virtme-ng wants a static busybox, but busybox-static conflicts with the dynamic busybox the
# test images use: take the binary out of the package instead of installing it.
VM_BUSYBOX=/var/cache/pycri-vm/busybox
if [ ! -x "$VM_BUSYBOX" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download -qq busybox-static 2>/dev/null \
     || { apt-get update -qq && apt-get download -qq busybox-static 2>/dev/null; }; } \
   && dpkg-deb -x busybox-static_*.deb x)
  mkdir -p "$(dirname "$VM_BUSYBOX")"
  install -m 0755 "$tmp/x/bin/busybox" "$VM_BUSYBOX"
  rm -rf "$tmp"
fi

PY=${PYTHON:-python3}
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,vm]"
# the containers' keeper (runtime/keeper/keeper.c, pycri's own C, no libc): built once here;
# the zygote builds it on first start when this was skipped (gcc and libc6-dev above)
"$PY" -m runtime.keeper >/dev/null
"$PY" -m runtime.exec_helper >/dev/null  # the exec helper (runtime/exec_helper/exec_helper.c, static)
