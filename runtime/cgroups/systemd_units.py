"""systemd cgroup driver: unit names and unit properties (pure, no I/O; the D-Bus calls are in
runtime.cgroups.systemd_dbus, used by the daemon only).

With `cgroup_driver = "systemd"` every pod and container cgroup is a systemd unit:
- the pod: a slice named by kubelet (`kubepods-burstable-pod<uid>.slice`), or pycri's own
  `<parent>-pod<sandbox id>.slice`; started as a transient slice when it is not there yet;
- the pause-holder: the scope `pycri-<pod id>.scope` in it, and each container the scope
  `pycri-<container id>.scope`, both with Delegate=yes (the payload owns the cgroup below).
Resources systemd owns are unit properties (systemd rewrites those cgroup files from the
properties whenever it re-applies a unit, so the two must agree); the container init still
writes every file (as runc does after setting the properties), so what systemd does not know
(hugetlb, io.max, other `unified` keys) is set as well.

A property is (name, D-Bus signature, value), as StartTransientUnit and SetUnitProperties take
them (`a(sv)`).
"""
from __future__ import annotations

from typing import Any

from pycri_common.errors import InvalidArgument
from runtime.cgroups.naming import SCOPE_PREFIX, expand_slice
from runtime.cgroups.resources import shares_to_weight, swap_to_v2

Property = tuple[str, str, Any]

UINT64_MAX = (1 << 64) - 1  # "infinity" for systemd's limits (USEC_INFINITY, CGROUP_LIMIT_MAX)
DEFAULT_CPU_PERIOD = 100000
MAX_CPUS = 8192  # bits in an AllowedCPUs mask we accept (the kernel's NR_CPUS upper end)


def scope_name(unit_id: str, prefix: str = SCOPE_PREFIX) -> str:
    """`pycri-<id>.scope` (containerd: cri-containerd-<id>.scope, CRI-O: crio-<id>.scope)."""
    if not unit_id or any(c not in _UNIT_CHARS for c in unit_id):
        raise InvalidArgument(f"systemd scope: invalid unit name part {unit_id!r}")
    return f"{prefix}-{unit_id}.scope" if prefix else f"{unit_id}.scope"


_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\")


def parent_slice(slice_name: str) -> str:
    """The slice a slice lives in: 'a-b-c.slice' -> 'a-b.slice', 'a.slice' -> '-.slice'."""
    expand_slice(slice_name)  # validates
    if slice_name == "-.slice":
        raise InvalidArgument("the root slice -.slice has no parent")
    base = slice_name[: -len(".slice")]
    return base.rsplit("-", 1)[0] + ".slice" if "-" in base else "-.slice"


def unit_of_path(path: str) -> str:
    """The unit whose cgroup is `path`: its last component ('/a.slice/a-b.slice' -> 'a-b.slice',
    '/.../pycri-x.scope' -> 'pycri-x.scope')."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not name.endswith((".slice", ".scope")):
        raise InvalidArgument(f"cgroup {path!r} is not a systemd slice or scope")
    return name


def cpu_quota_per_sec_usec(quota: int, period: int) -> int:
    """CFS quota per period -> systemd's CPUQuotaPerSecUSec (CPU time per wall-clock second).
    systemd keeps it in whole percent (10 ms per second), so a fraction is rounded up: the
    cpu.max systemd then writes is never below the quota asked for. quota <= 0: unlimited."""
    if quota <= 0:
        return UINT64_MAX
    per_sec = quota * 1_000_000 // (period or DEFAULT_CPU_PERIOD)
    return -(-per_sec // 10_000) * 10_000


def cpuset_bits(spec: str, what: str) -> bytes:
    """'0-2,7' -> the bit mask systemd's AllowedCPUs/AllowedMemoryNodes take: byte i holds
    CPUs 8i..8i+7, lowest bit first."""
    bits: set[int] = set()
    for part in spec.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise InvalidArgument(f"{what}: bad CPU/node list {spec!r}") from None
        if first < 0 or last < first or last >= MAX_CPUS:
            raise InvalidArgument(f"{what}: bad range {part!r} in {spec!r}")
        bits.update(range(first, last + 1))
    if not bits:
        raise InvalidArgument(f"{what}: empty CPU/node list {spec!r}")
    out = bytearray(max(bits) // 8 + 1)
    for b in bits:
        out[b // 8] |= 1 << (b % 8)
    return bytes(out)


def _limit(value: str, key: str) -> int:
    """A cgroup v2 limit file value ('max' or bytes/count) as a systemd limit."""
    v = value.strip()
    if v == "max":
        return UINT64_MAX
    try:
        n = int(v)
    except ValueError:
        raise InvalidArgument(f"cgroup.resources.unified[{key}]: {value!r} is not a number or "
                              "'max'") from None
    if n < 0:
        raise InvalidArgument(f"cgroup.resources.unified[{key}]: negative value {value!r}")
    return n


_UNIFIED_LIMITS = {"memory.min": "MemoryMin", "memory.low": "MemoryLow",
                   "memory.high": "MemoryHigh", "memory.max": "MemoryMax",
                   "memory.swap.max": "MemorySwapMax", "pids.max": "TasksMax"}


def _unified_properties(unified: dict[str, Any]) -> list[Property]:
    """`unified` keys systemd owns, as properties (the files are written too)."""
    out: list[Property] = []
    for key, raw in unified.items():
        value = str(raw)
        if key in _UNIFIED_LIMITS:
            out.append((_UNIFIED_LIMITS[key], "t", _limit(value, key)))
        elif key == "cpu.weight":
            out.append(("CPUWeight", "t", _limit(value, key)))
        elif key == "io.weight":
            # "default N" (or a bare N); per-device lines stay in the file only
            for line in value.splitlines():
                fields = line.split()
                if len(fields) == 1 or (len(fields) == 2 and fields[0] == "default"):
                    out.append(("IOWeight", "t", _limit(fields[-1], key)))
        elif key == "cpu.max":
            fields = value.split()
            if not 1 <= len(fields) <= 2:
                raise InvalidArgument(f"cgroup.resources.unified[cpu.max]: bad value {value!r}")
            period = int(_limit(fields[1], key)) if len(fields) == 2 else DEFAULT_CPU_PERIOD
            quota = -1 if fields[0] == "max" else _limit(fields[0], key)
            out.append(("CPUQuotaPeriodUSec", "t", period))
            out.append(("CPUQuotaPerSecUSec", "t", cpu_quota_per_sec_usec(quota, period)))
        elif key in ("cpuset.cpus", "cpuset.mems"):
            prop = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
            out.append((prop, "ay", cpuset_bits(value, f"cgroup.resources.unified[{key}]")))
    return out


def resource_properties(res: dict[str, Any]) -> list[Property]:
    """ContainerSpec resources (container_spec.Resources JSON names) -> the unit properties
    systemd owns. Zero or missing fields are left out (they keep their value on an update, as
    in containerd). `unified` keys come last and win, as in the files."""
    def get(key: str) -> int:
        return int(res.get(key) or 0)

    out: list[Property] = []
    mem = get("memory_limit_in_bytes")
    if mem:
        out.append(("MemoryMax", "t", UINT64_MAX if mem < 0 else mem))
    if get("memory_reservation_in_bytes"):
        out.append(("MemoryLow", "t", get("memory_reservation_in_bytes")))
    swap = swap_to_v2(mem, get("memory_swap_limit_in_bytes"))
    if swap is not None:
        out.append(("MemorySwapMax", "t", UINT64_MAX if swap == "max" else int(swap)))
    weight = shares_to_weight(get("cpu_shares"))
    if weight:
        out.append(("CPUWeight", "t", weight))
    quota, period = get("cpu_quota"), get("cpu_period")
    if period:
        out.append(("CPUQuotaPeriodUSec", "t", period))
    if quota or period:
        out.append(("CPUQuotaPerSecUSec", "t", cpu_quota_per_sec_usec(quota, period)))
    pids = get("pids_limit")
    if pids:
        out.append(("TasksMax", "t", UINT64_MAX if pids < 0 else pids))
    if res.get("cpuset_cpus"):
        out.append(("AllowedCPUs", "ay", cpuset_bits(str(res["cpuset_cpus"]),
                                                     "cgroup.resources.cpuset_cpus")))
    if res.get("cpuset_mems"):
        out.append(("AllowedMemoryNodes", "ay", cpuset_bits(str(res["cpuset_mems"]),
                                                            "cgroup.resources.cpuset_mems")))
    out.extend(_unified_properties(dict(res.get("unified") or {})))
    return _last_wins(out)


def _last_wins(props: list[Property]) -> list[Property]:
    """One entry per property name, the last one given, in first-seen order."""
    seen: dict[str, Property] = {}
    for p in props:
        seen.pop(p[0], None)
        seen[p[0]] = p
    return list(seen.values())


_ACCOUNTING: list[Property] = [("MemoryAccounting", "b", True), ("CPUAccounting", "b", True),
                               ("IOAccounting", "b", True), ("TasksAccounting", "b", True)]


def _oom_policy(res: dict[str, Any]) -> list[Property]:
    """unified memory.oom.group is systemd's OOMPolicy, which only a new unit takes."""
    value = str((res.get("unified") or {}).get("memory.oom.group", "")).strip()
    return [("OOMPolicy", "s", {"0": "continue", "1": "kill"}[value])] if value in ("0", "1") \
        else []


def scope_properties(slice_name: str, pids: list[int], description: str,
                     res: dict[str, Any] | None = None) -> list[Property]:
    """StartTransientUnit properties of a delegated scope in `slice_name` holding `pids`."""
    expand_slice(slice_name)
    if not pids or any(p <= 0 for p in pids):
        raise InvalidArgument(f"a scope needs at least one process, got {pids!r}")
    res = res or {}
    return [("Description", "s", description), ("Slice", "s", slice_name),
            ("Delegate", "b", True), ("PIDs", "au", list(pids)), *_ACCOUNTING,
            ("DefaultDependencies", "b", False), *_oom_policy(res), *resource_properties(res)]


def slice_properties(slice_name: str, description: str,
                     res: dict[str, Any] | None = None) -> list[Property]:
    """StartTransientUnit properties of a slice (its parent comes from its name; Wants= it, as
    runc does, so the parent is started with it)."""
    parent = parent_slice(slice_name)
    wants: list[Property] = [("Wants", "as", [parent])] if parent != "-.slice" else []
    return [("Description", "s", description), *wants, *_ACCOUNTING,
            ("DefaultDependencies", "b", False), *resource_properties(res or {})]
