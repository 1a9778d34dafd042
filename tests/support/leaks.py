"""Snapshots of host resources a runtime can leak, and the difference between two.

The session fixture in tests/conftest.py takes one before the first test and
one after the last, and fails the run if anything new is left: mounts, network
namespaces, processes (shims, zygotes, daemons, anything in another mount
namespace), cgroups, iptables rules, veths, CNI IP allocations.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PROCESS_MARKERS = ("runtime.shim", "runtime.zygote", "cri_server", "pycri")


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _mounts() -> set[str]:
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            if "pycri" in point:
                out.add(point)
    return out


def _processes() -> set[str]:
    me = os.getpid()
    try:
        host_mnt = os.readlink("/proc/self/ns/mnt")
    except OSError:
        host_mnt = ""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
            mnt = os.readlink(f"/proc/{entry}/ns/mnt")
        except OSError:
            continue
        if not cmdline:
            continue  # kernel thread or zombie
        if any(m in cmdline for m in PROCESS_MARKERS) or (host_mnt and mnt != host_mnt):
            if "pytest" in cmdline:
                continue
            found.add(f"{entry}: {cmdline[:120]}")
    return found


def _cgroups() -> set[str]:
    out = set()
    base = Path("/sys/fs/cgroup")
    for top in [base, *[p for p in base.iterdir() if p.is_dir()]] if base.exists() else []:
        try:
            for child in top.iterdir():
                if child.is_dir() and ("pycri" in child.name or child.name.startswith("kubepods")):
                    out.add(str(child))
        except OSError:
            continue
    return out


# Per-pod chains and rules (CNI-<hash>, CNI-DN-<hash>, our test subnet); the
# portmap plugin's shared base chains (CNI-HOSTPORT-*) stay by design.
_PER_POD_RULE = re.compile(r"CNI-(DN-|SN-)?[0-9a-f]{16,}|10\.233\.|pycri")


def _iptables() -> set[str]:
    rules = set()
    for line in _run("iptables-save").splitlines():
        if line.startswith(("#", "*", "COMMIT")):
            continue
        if _PER_POD_RULE.search(line):
            rules.add(line.split(" [")[0])
    return rules


def _links() -> set[str]:
    """Host-side veths (pod interfaces CNI DEL should have removed), read over netlink."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        names = (link.get_attr("IFLA_IFNAME") for link in ipr.get_links())
        return {n for n in names if n and n.startswith("veth")}


def _ip_allocations() -> set[str]:
    out = set()
    base = Path("/var/lib/cni/networks")
    if base.exists():
        for net in base.iterdir():
            for f in net.iterdir():
                if f.name[0].isdigit() or ":" in f.name:
                    out.add(str(f))
    return out


@dataclass
class Snapshot:
    items: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def take(cls) -> Snapshot:
        return cls({
            "mounts": _mounts(),
            "netns": set(_run("ip", "netns", "list").split()),
            "processes": _processes(),
            "cgroups": _cgroups(),
            "iptables": _iptables(),
            "veths": _links(),
            "ip allocations": _ip_allocations(),
        })

    def leaked_since(self, before: Snapshot) -> dict[str, set[str]]:
        out = {}
        for kind, now in self.items.items():
            new = now - before.items.get(kind, set())
            if kind == "netns":
                new = {n for n in new if not n.startswith("(")}
            if new:
                out[kind] = new
        return out


def format_leaks(leaks: dict[str, set[str]]) -> str:
    lines = ["tests left these behind:"]
    for kind, items in sorted(leaks.items()):
        lines.append(f"  {kind}:")
        lines.extend(f"    {item}" for item in sorted(items)[:30])
    return "\n".join(lines)
