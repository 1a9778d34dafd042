"""The guest's state is its own: what the leak checks and the tests read must not be the
host's, shown through the copy-on-write overlays of scripts/vm.sh (a host pod's host-local IP
allocation once showed up in the guest as a leak of the VM leg)."""
from __future__ import annotations

import os


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, fs type) of the mount holding `path`."""
    best = ("", "")
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            point = fields[1]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and \
                    len(point) > len(best[0]):
                best = (point, fields[2])
    return best


def test_cni_state_is_the_guests_own() -> None:
    # host-local keeps its allocations in /var/lib/cni/networks
    os.makedirs("/var/lib/cni/networks", exist_ok=True)
    assert _mount_of("/var/lib/cni/networks") == ("/var/lib/cni", "tmpfs")
