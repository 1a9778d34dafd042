#!/usr/bin/env bash
# Runs CMD... as root in a throw-away VM and returns its exit code:
#   bash scripts/vm.sh python3 -m pytest tests/vm
# The guest boots Debian's 6.12 kernel (scripts/vm_kernel.sh) with cgroup v2 as its only hierarchy
# (every controller) and AppArmor, over the host's root filesystem shared read-only with
# copy-on-write overlays (virtme-ng), this checkout as its working directory. QEMU runs
# without KVM (TCG): this machine's /dev/kvm cannot run stock kernels. Installed by
# scripts/setup.sh. PYCRI_VM_MEMORY / PYCRI_VM_CPUS / PYCRI_VM_KERNEL override the defaults.
# PYCRI_VM_SYSTEMD=1 boots systemd as PID 1 instead (scripts/vm_systemd_run.sh runs CMD as the
# unit of the kernel command line, with the D-Bus system bus up), for the systemd cgroup driver;
# with PYCRI_VM_CGROUP=hybrid it boots cgroup v1 (systemd's hybrid layout) instead of v2.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
[ "$#" -gt 0 ] || { echo "usage: scripts/vm.sh CMD [ARG...]" >&2; exit 2; }

# The kernel scripts/setup.sh installs (scripts/vm_kernel.sh), not whatever is newest in /boot.
. scripts/vm_kernel.sh
KERNEL=${PYCRI_VM_KERNEL:-/boot/vmlinuz-$VM_KERNEL_VERSION}
if [ "${PYCRI_VM_SYSTEMD:-0}" = 1 ] && [ -z "${PYCRI_VM_KERNEL:-}" ]; then
  # systemd 252 stalls right after its first message on bookworm-backports' 6.12 under TCG;
  # Debian 12's own 6.1 kernel boots it (PYCRI_VM_SYSTEMD_KERNEL overrides).
  KERNEL=${PYCRI_VM_SYSTEMD_KERNEL:-$(ls /boot/vmlinuz-6.1.*-amd64 2>/dev/null | sort -V | tail -n 1)}
fi
[ -r "$KERNEL" ] || { echo "vm.sh: no $KERNEL (run scripts/setup.sh: $VM_KERNEL_PACKAGE)" >&2; exit 2; }
BUSYBOX=${PYCRI_VM_BUSYBOX:-/var/cache/pycri-vm/busybox}
[ -x "$BUSYBOX" ] || { echo "vm.sh: no static busybox at $BUSYBOX (run scripts/setup.sh)" >&2; exit 2; }
PY=${PYTHON:-python3}
# The real interpreter, not a pyenv shim: a shim costs seconds per start under TCG.
PYBIN=$(dirname "$("$PY" -c 'import sys; print(sys.executable)')")
VNG=$PYBIN/vng
[ -x "$VNG" ] || VNG=$(command -v vng) || { echo "vm.sh: vng missing (pip install virtme-ng)" >&2; exit 2; }

# Emulated q35 devices the guest never uses: not probing them saves seconds of boot under TCG.
BLACKLIST=iTCO_wdt,iTCO_vendor_support,i6300esb,lpc_ich,i2c_i801,pcspkr,ahci,libahci,sr_mod,cdrom,psmouse,serio_raw,evdev,joydev,floppy,parport_pc,bochs,drm,drm_kms_helper,ttm,intel_rapl_msr,intel_rapl_common
APPEND="cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 modprobe.blacklist=$BLACKLIST"
if [ "${PYCRI_VM_CGROUP:-v2}" = hybrid ]; then
  # cgroup v1 controllers with systemd's own cgroup2 at /sys/fs/cgroup/unified (systemd's
  # "hybrid" layout; only a systemd PID 1 mounts it): the systemd driver on cgroup v1.
  [ "${PYCRI_VM_SYSTEMD:-0}" = 1 ] || { echo "vm.sh: PYCRI_VM_CGROUP=hybrid needs PYCRI_VM_SYSTEMD=1" >&2; exit 2; }
  APPEND="systemd.unified_cgroup_hierarchy=0 modprobe.blacklist=$BLACKLIST"
fi

# The guest gets the command as one shell string; the environment it needs goes with it.
cmd=$(printf '%q ' env "PATH=$PYBIN:$PATH" "CI=${CI:-}" PYTHONDONTWRITEBYTECODE=1 \
  "PYCRI_VM=1" "PYCRI_VM_SYSTEMD=${PYCRI_VM_SYSTEMD:-0}" "PYCRI_VM_CGROUP=${PYCRI_VM_CGROUP:-v2}" \
  "PYCRI_TIMEOUT_SCALE=${PYCRI_TIMEOUT_SCALE:-20}" bash "$REPO/scripts/vm_guest.sh" "$@")
if [ "${PYCRI_VM_SYSTEMD:-0}" = 1 ]; then
  # systemd 252 in this guest: the host's /.dockerenv would make it think it runs in a
  # container, and then it and its generators read their options from PID 1's argv instead of
  # the kernel command line. `container=` (empty) tells PID 1 otherwise; the generators get
  # theirs through SYSTEMD_PROC_CMDLINE. No command for vng itself: it would send the guest's
  # console to /dev/null; the command and its exit code go through a shared directory.
  OUT=$(mktemp -d /tmp/pycri-vm-systemd.XXXXXX)
  trap 'rm -rf "$OUT"' EXIT
  printf '%s\n' "$cmd" > "$OUT/cmd"
  printf '%s\n' "$REPO" > "$OUT/cwd"
  MASK=""
  for u in systemd-tmpfiles-setup.service systemd-tmpfiles-clean.timer systemd-udevd.service \
      systemd-udev-trigger.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
      apparmor.service systemd-journal-flush.service systemd-random-seed.service \
      systemd-timesyncd.service systemd-update-utmp.service systemd-logind.service \
      e2scrub_reap.service systemd-pstore.service; do
    MASK="$MASK systemd.mask=$u"
  done
  GEN="$MASK systemd.run=$REPO/scripts/vm_systemd_run.sh systemd.run_success_action=poweroff systemd.run_failure_action=poweroff"
  nice -n 5 "$VNG" --run "$KERNEL" --disable-kvm ${PYCRI_VM_FS_OPT---force-9p} \
    --memory "${PYCRI_VM_MEMORY:-4G}" --cpus "${PYCRI_VM_CPUS:-2}" \
    --busybox "$BUSYBOX" --systemd --rwdir "/run/pycri-vm-out=$OUT" \
    --append "container= $APPEND quiet loglevel=1 systemd.show_status=0" \
    --append "systemd.setenv=\"SYSTEMD_PROC_CMDLINE=$GEN\"" </dev/null 2>&1 | cat
  [ -s "$OUT/rc" ] || { echo "vm.sh: the guest ended without an exit code (systemd did not run the command)" >&2; exit 255; }
  exit "$(cat "$OUT/rc")"
fi
# The command goes in as a file of a shared directory, not on the kernel command line: the
# kernel keeps only its first 2048 bytes, and a cut command line loses init= with the rest
# (the guest then idles for ever without a word).
CMDDIR=$(mktemp -d /tmp/pycri-vm-cmd.XXXXXX)
trap 'rm -rf "$CMDDIR"' EXIT
printf '%s\n' "$cmd" > "$CMDDIR/cmd"
# Through a pipe (stdout and stderr): QEMU reopens a regular-file output from its start,
# which would overwrite
# what came before in a log (the host suite's output, in CI). pipefail keeps vng's status.
nice -n 5 "$VNG" --run "$KERNEL" --disable-kvm ${PYCRI_VM_FS_OPT---force-9p} \
  --memory "${PYCRI_VM_MEMORY:-4G}" --cpus "${PYCRI_VM_CPUS:-2}" \
  --busybox "$BUSYBOX" --cwd "$REPO" --rwdir "/run/pycri-vm-cmd=$CMDDIR" \
  --append "$APPEND" -- "bash /run/pycri-vm-cmd/cmd" </dev/null 2>&1 | cat
