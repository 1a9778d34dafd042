# pycri's default AppArmor profile: what RuntimeDefault (and runtime/default) confines a
# container with. pycri loads it with `apparmor_parser -K -r` where the kernel has AppArmor.
# Self-contained (no includes): everything is allowed, then the kernel interfaces a container
# must not use are taken away again (deny rules win over allow rules).
profile pycri-default flags=(attach_disconnected,mediate_deleted) {
  file,
  network,
  capability,
  umount,

  # no new mounts, pivots or remounts from inside (the runtime mounted what the container has)
  deny mount,
  deny pivot_root,

  # processes of other profiles (the host's) are not signalled or traced
  signal (send, receive) peer=pycri-default,
  signal (receive) peer=unconfined,
  ptrace (read, trace, readby, tracedby) peer=pycri-default,

  # kernel memory, consoles, triggers and tunables
  deny /proc/kcore rwklx,
  deny /proc/kmem rwklx,
  deny /proc/mem rwklx,
  deny /proc/kmsg rwklx,
  deny /proc/sysrq-trigger rwklx,
  deny /proc/sys/** wklx,
  deny /proc/acpi/** rwklx,
  deny /proc/scsi/** rwklx,
  deny /proc/timer_list rwklx,
  deny /proc/sched_debug rwklx,
  deny /proc/keys rwklx,

  # sysfs is read-only to containers, except the container's own cgroup files
  deny /sys/[^f]** wklx,
  deny /sys/f[^s]** wklx,
  deny /sys/fs/[^c]** wklx,
  deny /sys/fs/c[^g]** wklx,
  deny /sys/fs/cg[^r]** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/security/** rwklx,
  deny /sys/kernel/debug/** rwklx,
}
