#!/bin/bash
# The guest side of `PYCRI_VM_SYSTEMD=1 scripts/vm.sh CMD`: systemd (PID 1) runs this as the unit
# of its kernel command line (systemd.run=, systemd-run-generator), after basic.target. It gives
# the guest the copy-on-write directories virtme-ng's own init would have made, starts the
# D-Bus system bus, runs the command vm.sh left in the shared directory, and leaves its exit code
# there; systemd powers the guest off when this unit ends.
exec >/dev/console 2>&1
OUT=/run/pycri-vm-out
mkdir -p "$OUT"
mount -t 9p -o trans=virtio,version=9p2000.L,access=any virtme.initmount0 "$OUT" || {
  echo "vm_systemd_run.sh: cannot mount the shared directory"; exit 0; }
rc=255
trap 'echo "$rc" > "$OUT/rc"; sync' EXIT
# the root is the host's, read-only over 9p: writable overlays as virtme-ng-init makes them
for d in /etc /var /root /home /opt /srv; do
  [ -d "$d" ] || continue
  mkdir -p "/run/pycri-vm-ov$d/upper" "/run/pycri-vm-ov$d/work"
  mount -t overlay -o "lowerdir=$d,upperdir=/run/pycri-vm-ov$d/upper,workdir=/run/pycri-vm-ov$d/work" overlay "$d"
done
ip link set lo up
systemctl start dbus.socket dbus.service
cd "$(cat "$OUT/cwd")"
bash "$OUT/cmd"
rc=$?
