"""Which cgroup layout the host has, and where the v1 hierarchies are mounted."""
from __future__ import annotations

import os

CGROUP_ROOT = "/sys/fs/cgroup"


# The host's cgroup layout does not change while pycri runs, but the mount table
# grows with every pod (pinned namespaces): read it once, not on every stats poll.
_HOST_CGROUP_MOUNTS: list[tuple[str, str, str]] | None = None


def _mounts(mounts_text: str | None) -> list[tuple[str, str, str]]:
    global _HOST_CGROUP_MOUNTS
    if mounts_text is None:
        if _HOST_CGROUP_MOUNTS is None:
            with open("/proc/self/mounts") as f:
                _HOST_CGROUP_MOUNTS = [m for m in _parse(f.read())
                                       if m[1] in ("cgroup", "cgroup2")]
        return _HOST_CGROUP_MOUNTS
    return _parse(mounts_text)


def _parse(mounts_text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[1].replace("\\040", " "), parts[2], parts[3]))
    return out


def detect_mode(root: str = CGROUP_ROOT, mounts_text: str | None = None) -> str:
    """'v2' when `root` is a cgroup2 mount, 'hybrid' for v1 plus <root>/unified, else 'v1'."""
    root = os.path.normpath(root)
    mounts = _mounts(mounts_text)
    types = {target: fstype for target, fstype, _ in mounts}
    if types.get(root) == "cgroup2":
        return "v2"
    if types.get(os.path.join(root, "unified")) == "cgroup2":
        return "hybrid"
    return "v1"


def v1_hierarchies(root: str = CGROUP_ROOT, mounts_text: str | None = None) -> dict[str, str]:
    """{controller: mount dir} for every cgroup v1 hierarchy under root. Co-mounted controllers
    (cpu,cpuacct) map to the same dir; named hierarchies appear as 'name=systemd'."""
    root = os.path.normpath(root)
    out: dict[str, str] = {}
    for target, fstype, opts in _mounts(mounts_text):
        if fstype != "cgroup" or not target.startswith(root + "/"):
            continue
        for opt in opts.split(","):
            if opt in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec", "clone_children",
                       "noprefix", "xattr", "cpuset_v2_mode") or opt.startswith("release_agent"):
                continue
            out.setdefault(opt, target)
    return out


def unified_root(root: str = CGROUP_ROOT, mounts_text: str | None = None) -> str | None:
    """The cgroup2 mount: root itself (v2) or root/unified (hybrid); None on pure v1."""
    mode = detect_mode(root, mounts_text)
    if mode == "v2":
        return os.path.normpath(root)
    if mode == "hybrid":
        return os.path.join(os.path.normpath(root), "unified")
    return None
