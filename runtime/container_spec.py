"""ContainerSpec: what the daemon asks the shim and the container init to run (contract 4 of
docs/architecture.md), as frozen dataclasses with one parse and one serialisation each.

The daemon builds a ContainerSpec (cri_server.containers.spec_builder) and sends
``spec.to_json()`` in the shim's "create" operation; the shim parses it with
``ContainerSpec.from_json`` and hands the parsed object to ``runtime.container_init.run``
(contract 5) in the child it forks. ``from_json`` is the validation: it fills the optional
fields with their defaults and raises InvalidArgument("container spec: <field>: ...") naming
the field at fault. Nothing here touches the system; only the standard library and small
runtime modules are imported (the shim imports this).

JSON form (every path absolute; ``to_json`` writes every field, ``from_json`` accepts the
optional ones missing)::

    {"id": str, "pod_id": str,
     "rootfs": {"lower": [dir, ...],        # image snapshot dirs, TOP layer first
                "upper": dir, "work": dir,  # per-container writable layer (same filesystem)
                "mountpoint": dir | null,   # where the overlay is mounted inside the container's
                                            # own mount namespace; default <dirname(upper)>/rootfs
                                            # (created if missing; nothing is mounted on the host)
                "readonly": bool},          # readonly_rootfs
     "process": {"args": [str, ...],        # argv; args[0] is looked up in PATH from env
                 "env": ["K=V", ...], "cwd": "/abs" (created if missing),
                 "tty": bool, "stdin": bool, "stdin_once": bool,
                 "user": {"uid": int|null, "gid": int|null, "username": str|null,
                          "groupname": str|null, "supplemental_groups": [int],
                          "policy": "Merge"|"Strict"},
                 "capabilities": {"bounding"|"effective"|"permitted"|"inheritable"|"ambient":
                                  ["CAP_CHOWN", ...]} | null (default set),
                 "no_new_privs": bool, "oom_score_adj": int|null,
                 "rlimits": [{"type": "RLIMIT_NOFILE", "soft": int, "hard": int}] | null,
                 "apparmor_profile": null | "unconfined" | "runtime/default" | "localhost/<name>"},
     "namespaces": [{"type": "network"|"ipc"|"uts"|"pid"|"mount"|"cgroup", "path": str|null}],
                 # listed with path = join; listed without path = new; not listed = host's.
                 # "mount" is always new for run() (a path there is ignored).
     "hostname": str|null,
     "userns": null | {"path": str,          # the pod's pinned user namespace (joined after the
                                            # filesystem is built; mounts are idmapped with it)
                       "uid_map": [[container_id, host_id, length]], "gid_map": [...]},
     "mounts": [Mount, ...],                # applied in order: default_mounts() first
     "devices": [{"host_path", "container_path", "permissions": "rwm",
                  # optional (CDI device nodes): the node to make, no host node needed;
                  # permissions "" = no devices-cgroup rule
                  "type": "c"|"b"|"p", "major": int, "minor": int, "file_mode": int,
                  "uid": int, "gid": int}],
     "masked_paths": [...], "readonly_paths": [...],   # as CRI sent them (empty list honoured)
     "privileged": bool,
     "seccomp": null | OCI seccomp profile (see runtime.seccomp.runtime_default_profile),
     "cgroup": {"driver": "cgroupfs"|"systemd",
                "path": "/kubepods/.../<ctr>" (filesystem path under each hierarchy; systemd
                        also accepts "slice:prefix:name", converted by the parse),
                "resources": Resources} | null,
     "log_path": str|null,                  # the CRI log file, created by the shim
     "log_directory": str|null,             # the pod's log directory (trusted); nothing of
                                            # log_path below it is followed through a symlink
     # optional, left out of the JSON when unset:
     "hooks": {"createRuntime"|"createContainer"|"startContainer"|"poststart"|"poststop":
               [{"path", "args", "env", "timeout"}]},   # OCI hooks (runtime.hooks); default {}
     "annotations": {str: str},             # what hooks get in the OCI state; default {}
     "cdi_devices": [str],                  # CDI devices applied (informational); default []
     "intel_rdt": null | {"root", "clos_id", "schemata": [str], "monitoring", "owned"},
                                            # resctrl group to join (runtime.resctrl)
     "sysctls": {name: value}}              # namespaced sysctls the init writes inside the
                                            # container's namespaces (NRI); default {}

Mount types understood by the init: bind, proc, tmpfs, devpts, mqueue, sysfs, cgroup (mounts the
host's cgroup hierarchies as seen from the container's cgroup namespace), and any other
filesystem type given with a source (mounted as-is). ``options`` are mount(8)-style words:
flags (ro, nosuid, nodev, noexec, relatime, strictatime, ...) and data (mode=755, size=...).
A mount with ``sub_path``: the filesystem (or bind source) is first mounted on a staging
directory private to the container's mount namespace, `sub_path` is resolved inside it
(symlinks cannot leave it; missing -> InvalidArgument) and only that is bound on the
destination (image volumes with `image_sub_path`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from pycri_common.errors import InvalidArgument
from runtime import arglimits, resctrl
from runtime import hooks as oci_hooks
from runtime.capability_names import CAPABILITY_NAMES, last_cap, normalize_capability
from runtime.cgroups.naming import systemd_path_to_fs
from runtime.pod_spec import IdMaps
from runtime.sysctls import check_sysctls

#: The capability set containerd and CRI-O give an unprivileged container.
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

#: Paths containerd masks by default (files: /dev/null bound over; dirs: read-only tmpfs).
DEFAULT_MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)

#: Paths containerd makes read-only by default.
DEFAULT_READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

RLIMIT_TYPES: tuple[str, ...] = (
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
    "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
)

NAMESPACE_TYPES: tuple[str, ...] = ("network", "ipc", "uts", "pid", "mount", "cgroup")
PROPAGATIONS: tuple[str | None, ...] = ("private", "rslave", "rshared", None)
CAP_SET_NAMES: tuple[str, ...] = ("bounding", "effective", "permitted", "inheritable", "ambient")
_RESOURCE_INTS: tuple[str, ...] = (
    "cpu_shares", "cpu_quota", "cpu_period", "memory_limit_in_bytes",
    "memory_swap_limit_in_bytes", "pids_limit", "oom_score_adj",
    "memory_reservation_in_bytes", "memory_swappiness", "cpu_realtime_runtime",
    "cpu_realtime_period")


# --------------------------------------------------------------------------- parse helpers

def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise InvalidArgument(f"container spec: {where}: {msg}")


def _obj(value: Any, where: str) -> dict[str, Any]:
    _need(isinstance(value, dict), where, "must be an object")
    return dict(value)


def _abs_path(value: Any, where: str) -> str:
    _need(isinstance(value, str) and value.startswith("/") and "\0" not in value, where,
          f"must be an absolute path, got {value!r}")
    return str(value)


def _opt_abs_path(value: Any, where: str) -> str | None:
    return None if value is None else _abs_path(value, where)


def _opt_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    _need(isinstance(value, int) and not isinstance(value, bool), where,
          f"must be an integer or null, got {value!r}")
    return int(value)


def _bool(value: Any, where: str) -> bool:
    _need(isinstance(value, bool), where, f"must be true or false, got {value!r}")
    return bool(value)


def _opt_str(value: Any, where: str) -> str | None:
    _need(value is None or isinstance(value, str), where, "must be a string or null")
    return None if value is None else str(value)


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    _need(isinstance(value, list | tuple) and all(isinstance(v, str) for v in value), where,
          f"must be a list of strings, got {value!r}")
    return tuple(value)


def _list(value: Any, where: str) -> list[Any]:
    _need(isinstance(value, list | tuple), where, "must be a list")
    return list(value)


def _normalize_caps(names: Sequence[Any] | None, where: str) -> list[str]:
    out: list[str] = []
    for name in names or []:
        norm = normalize_capability(name) if isinstance(name, str) else None
        if norm is None:
            raise InvalidArgument(f"{where}: unknown capability {name!r}")
        out.append(norm)
    return out


# --------------------------------------------------------------------------- process

@dataclass(frozen=True, slots=True)
class UserSpec:
    """Who the process runs as; names are resolved against the rootfs' /etc by the init."""

    uid: int | None = None
    gid: int | None = None
    username: str | None = None
    groupname: str | None = None
    supplemental_groups: tuple[int, ...] = ()
    policy: str = "Merge"  # "Merge" (image groups of the user too) | "Strict"

    @classmethod
    def from_json(cls, obj: Any, where: str = "process.user") -> Self:
        u = _obj(obj, where)
        ids: dict[str, int | None] = {}
        for key in ("uid", "gid"):
            v = _opt_int(u.get(key), f"{where}.{key}")
            _need(v is None or 0 <= v < 2**32 - 1, f"{where}.{key}", f"out of range: {v}")
            ids[key] = v
        names: dict[str, str | None] = {}
        for key in ("username", "groupname"):
            n = u.get(key)
            _need(n is None or (isinstance(n, str) and n != "" and ":" not in n
                                and "\n" not in n),
                  f"{where}.{key}", f"must be a name without ':' or null, got {n!r}")
            names[key] = n
        groups = u.get("supplemental_groups", [])
        _need(isinstance(groups, list | tuple) and all(
            isinstance(g, int) and not isinstance(g, bool) and 0 <= g < 2**32 - 1
            for g in groups), f"{where}.supplemental_groups",
            f"must be a list of group ids, got {groups!r}")
        pol = u.get("policy") or "Merge"
        _need(pol in ("Merge", "Strict"), f"{where}.policy",
              f"must be Merge or Strict, got {pol!r}")
        _need(not (ids["uid"] is not None and names["username"] is not None), where,
              "give uid or username, not both")
        _need(not (ids["gid"] is not None and names["groupname"] is not None), where,
              "give gid or groupname, not both")
        return cls(uid=ids["uid"], gid=ids["gid"], username=names["username"],
                   groupname=names["groupname"], supplemental_groups=tuple(groups),
                   policy=str(pol))

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "username": self.username,
                "groupname": self.groupname,
                "supplemental_groups": list(self.supplemental_groups), "policy": self.policy}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The five capability sets, names like "CAP_CHOWN" ("ALL" expanded)."""

    bounding: tuple[str, ...] = ()
    effective: tuple[str, ...] = ()
    permitted: tuple[str, ...] = ()
    inheritable: tuple[str, ...] = ()
    ambient: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: Any, where: str = "process.capabilities") -> Self:
        c = _obj(obj, where)
        sets: dict[str, tuple[str, ...]] = {}
        for key in CAP_SET_NAMES:
            names = _str_list(c.get(key, []), f"{where}.{key}")
            norm = _normalize_caps(names, f"{where}.{key}")
            _need("ALL" not in norm, f"{where}.{key}",
                  "'ALL' must be expanded (use compute_capabilities)")
            sets[key] = tuple(norm)
        return cls(**sets)

    def to_json(self) -> dict[str, list[str]]:
        return {key: list(getattr(self, key)) for key in CAP_SET_NAMES}


@dataclass(frozen=True, slots=True)
class Rlimit:
    type: str  # one of RLIMIT_TYPES
    soft: int
    hard: int

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Self:
        _need(isinstance(obj, dict) and obj.get("type") in RLIMIT_TYPES, where + ".type",
              f"must be one of {', '.join(RLIMIT_TYPES)}")
        soft = _opt_int(obj.get("soft"), where + ".soft")
        hard = _opt_int(obj.get("hard"), where + ".hard")
        _need(soft is not None and hard is not None and 0 <= soft <= hard, where,
              f"needs 0 <= soft <= hard, got soft={soft} hard={hard}")
        assert soft is not None and hard is not None  # checked above
        return cls(type=str(obj["type"]), soft=soft, hard=hard)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "soft": self.soft, "hard": self.hard}


#: Default rlimits (hard limits above the runtime's own are clamped by the init: no
#: CAP_SYS_RESOURCE guaranteed).
DEFAULT_RLIMITS: tuple[Rlimit, ...] = (Rlimit("RLIMIT_NOFILE", 1024, 524288),)


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    user: UserSpec = field(default_factory=UserSpec)
    capabilities: Capabilities = field(default_factory=Capabilities)
    no_new_privs: bool = False
    oom_score_adj: int | None = None
    rlimits: tuple[Rlimit, ...] = DEFAULT_RLIMITS
    apparmor_profile: str | None = None

    @classmethod
    def from_json(cls, obj: Any, privileged: bool = False, where: str = "process") -> Self:
        """`privileged` picks the default capabilities when the object names none."""
        p = _obj(obj, where)
        args = p.get("args")
        _need(isinstance(args, list | tuple) and len(args) > 0
              and all(isinstance(a, str) for a in args) and args[0] != "", f"{where}.args",
              "must be a non-empty list of strings (no command and no image entrypoint/cmd?)")
        argv = tuple(str(a) for a in args or ())
        env = _str_list(p.get("env", []), f"{where}.env")
        for i, kv in enumerate(env):
            _need("=" in kv and not kv.startswith("=") and "\0" not in kv, f"{where}.env[{i}]",
                  f"must be KEY=VALUE, got {kv!r}")
        arglimits.check_exec_size(argv, env, f"container spec: {where}.args and {where}.env")
        flags = {key: _bool(p.get(key, False), f"{where}.{key}")
                 for key in ("tty", "stdin", "stdin_once", "no_new_privs")}
        user = UserSpec.from_json(p.get("user", {}), f"{where}.user")
        caps_obj = p.get("capabilities")
        caps = (compute_capabilities(privileged=privileged) if caps_obj is None
                else Capabilities.from_json(caps_obj, f"{where}.capabilities"))
        oom = _opt_int(p.get("oom_score_adj"), f"{where}.oom_score_adj")
        _need(oom is None or -1000 <= oom <= 1000, f"{where}.oom_score_adj",
              f"must be between -1000 and 1000, got {oom}")
        rl = p.get("rlimits")
        rlimits = DEFAULT_RLIMITS if rl is None else tuple(
            Rlimit.from_json(lim, f"{where}.rlimits[{i}]")
            for i, lim in enumerate(_list(rl, f"{where}.rlimits")))
        return cls(args=argv, env=env, cwd=_abs_path(p.get("cwd") or "/", f"{where}.cwd"),
                   user=user, capabilities=caps, oom_score_adj=oom, rlimits=rlimits,
                   apparmor_profile=_opt_str(p.get("apparmor_profile"),
                                             f"{where}.apparmor_profile"),
                   **flags)

    def to_json(self) -> dict[str, Any]:
        return {"args": list(self.args), "env": list(self.env), "cwd": self.cwd,
                "tty": self.tty, "stdin": self.stdin, "stdin_once": self.stdin_once,
                "user": self.user.to_json(), "capabilities": self.capabilities.to_json(),
                "no_new_privs": self.no_new_privs, "oom_score_adj": self.oom_score_adj,
                "rlimits": [r.to_json() for r in self.rlimits],
                "apparmor_profile": self.apparmor_profile}


# --------------------------------------------------------------------------- filesystem

@dataclass(frozen=True, slots=True)
class RootfsSpec:
    lower: tuple[str, ...]
    upper: str
    work: str
    mountpoint: str
    readonly: bool = False

    @classmethod
    def from_json(cls, obj: Any, where: str = "rootfs") -> Self:
        r = _obj(obj, where)
        lower = r.get("lower")
        _need(isinstance(lower, list | tuple) and len(lower) > 0, f"{where}.lower",
              "must be a non-empty list of layer directories")
        layers: list[str] = []
        for i, d in enumerate(lower or ()):
            layers.append(_abs_path(d, f"{where}.lower[{i}]"))
            _need(":" not in d and "," not in d, f"{where}.lower[{i}]",
                  "must not contain ':' or ',' (overlay option syntax)")
        dirs: dict[str, str] = {}
        for key in ("upper", "work"):
            dirs[key] = _abs_path(r.get(key), f"{where}.{key}")
            _need("," not in dirs[key] and ":" not in dirs[key], f"{where}.{key}",
                  "must not contain ':' or ','")
        mountpoint = r.get("mountpoint")
        if mountpoint is None:
            mountpoint = os.path.join(os.path.dirname(dirs["upper"].rstrip("/")), "rootfs")
        return cls(lower=tuple(layers), upper=dirs["upper"], work=dirs["work"],
                   mountpoint=_abs_path(mountpoint, f"{where}.mountpoint"),
                   readonly=_bool(r.get("readonly", False), f"{where}.readonly"))

    def to_json(self) -> dict[str, Any]:
        return {"lower": list(self.lower), "upper": self.upper, "work": self.work,
                "mountpoint": self.mountpoint, "readonly": self.readonly}


@dataclass(frozen=True, slots=True)
class Mount:
    destination: str
    type: str            # "bind" or a filesystem type
    source: str          # host path for bind; defaults to the type
    options: tuple[str, ...] = ()
    propagation: str | None = None  # "private" | "rslave" | "rshared" | None
    readonly: bool = False
    recursive_readonly: bool = False
    sub_path: str | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Self:
        m = _obj(obj, where)
        dest = _abs_path(m.get("destination"), where + ".destination")
        mtype = m.get("type")
        _need(isinstance(mtype, str) and mtype != "", where + ".type",
              "must be a filesystem type or 'bind'")
        assert isinstance(mtype, str)
        source = m.get("source", mtype)
        if mtype == "bind":
            _abs_path(source, where + ".source")
        else:
            _need(isinstance(source, str), where + ".source", "must be a string")
        readonly = _bool(m.get("readonly", False), where + ".readonly")
        rro = _bool(m.get("recursive_readonly", False), where + ".recursive_readonly")
        sub = m.get("sub_path")
        _need(sub is None or isinstance(sub, str), where + ".sub_path",
              "must be a string or null")
        prop = m.get("propagation")
        _need(prop in PROPAGATIONS, where + ".propagation",
              f"must be private, rslave, rshared or null, got {prop!r}")
        if rro:  # the three rules CRI defines for recursive_read_only
            _need(readonly, where + ".recursive_readonly", "requires readonly")
            _need(prop in (None, "private"), where + ".recursive_readonly",
                  f"requires private propagation, got {prop}")
            _need(mtype == "bind", where + ".recursive_readonly", "only for bind mounts")
        return cls(destination=dest, type=mtype, source=str(source),
                   options=_str_list(m.get("options", []), where + ".options"),
                   propagation=prop, readonly=readonly, recursive_readonly=rro,
                   sub_path=sub)

    def to_json(self) -> dict[str, Any]:
        return {"destination": self.destination, "type": self.type, "source": self.source,
                "options": list(self.options), "propagation": self.propagation,
                "readonly": self.readonly, "recursive_readonly": self.recursive_readonly,
                "sub_path": self.sub_path}


@dataclass(frozen=True, slots=True)
class Device:
    host_path: str
    container_path: str
    permissions: str = "rwm"  # letters of "rwm" (devices cgroup); "" = no rule (typed only)
    # A typed device (CDI deviceNodes) is made from these, without reading host_path:
    type: str | None = None  # "c" | "b" | "p"; None: copy the host node at host_path
    major: int = 0
    minor: int = 0
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Self:
        d = _obj(obj, where)
        host = _abs_path(d.get("host_path"), where + ".host_path")
        dtype = d.get("type")
        perms = d.get("permissions")
        perms = "rwm" if perms is None or (perms == "" and dtype is None) else perms
        _need(isinstance(perms, str) and set(perms) <= set("rwm"), where + ".permissions",
              f"must be letters of 'rwm', got {perms!r}")
        typed: dict[str, Any] = {}
        if dtype is not None:
            _need(dtype in ("c", "b", "p"), where + ".type", f"must be c, b or p, got {dtype!r}")
            for key, hi, default in (("major", 2**32 - 1, 0), ("minor", 2**32 - 1, 0),
                                     ("file_mode", 0o7777, 0o666), ("uid", 2**32 - 2, 0),
                                     ("gid", 2**32 - 2, 0)):
                v = _opt_int(d.get(key, default), f"{where}.{key}")
                _need(v is not None and 0 <= v <= hi, f"{where}.{key}",
                      f"must be an integer from 0 to {hi}")
                typed[key] = v
        return cls(host_path=host,
                   container_path=_abs_path(d.get("container_path") or host,
                                            where + ".container_path"),
                   permissions=str(perms), type=dtype, **typed)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"host_path": self.host_path,
                               "container_path": self.container_path,
                               "permissions": self.permissions}
        if self.type is not None:
            out.update(type=self.type, major=self.major, minor=self.minor,
                       file_mode=self.file_mode, uid=self.uid, gid=self.gid)
        return out


@dataclass(frozen=True, slots=True)
class Namespace:
    type: str               # one of NAMESPACE_TYPES
    path: str | None = None  # join this one; None: a new one

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Self:
        _need(isinstance(obj, dict) and obj.get("type") in NAMESPACE_TYPES, where + ".type",
              f"must be one of {', '.join(NAMESPACE_TYPES)}")
        return cls(type=str(obj["type"]), path=_opt_abs_path(obj.get("path"), where + ".path"))

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "path": self.path}


# --------------------------------------------------------------------------- cgroup

@dataclass(frozen=True, slots=True)
class HugepageLimit:
    page_size: str  # "2MB", "1GB"
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {"page_size": self.page_size, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class Resources:
    """Cgroup limits; 0 / None = not set. ``to_json()`` is the dict runtime.cgroups applies."""

    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    memory_limit_in_bytes: int | None = None
    memory_swap_limit_in_bytes: int | None = None
    pids_limit: int | None = None
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    unified: dict[str, str] = field(default_factory=dict)
    oom_score_adj: int | None = None
    # set by NRI plugins only (CRI has none of these); None = not set
    memory_reservation_in_bytes: int | None = None
    memory_swappiness: int | None = None  # 0..100; 0 is a value
    cpu_realtime_runtime: int | None = None
    cpu_realtime_period: int | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str = "cgroup.resources") -> Self:
        res = _obj(obj or {}, where)
        ints = {key: _opt_int(res.get(key), f"{where}.{key}") for key in _RESOURCE_INTS}
        cpusets: dict[str, str | None] = {}
        for key in ("cpuset_cpus", "cpuset_mems"):
            v = res.get(key)
            _need(v is None or (isinstance(v, str) and all(c in "0123456789,- " for c in v)),
                  f"{where}.{key}", f"must be a cpu/node list like '0-2,4', got {v!r}")
            cpusets[key] = v
        huge: list[HugepageLimit] = []
        for i, h in enumerate(_list(res.get("hugepage_limits") or [],
                                    f"{where}.hugepage_limits")):
            _need(isinstance(h, dict) and isinstance(h.get("page_size"), str)
                  and isinstance(h.get("limit"), int), f"{where}.hugepage_limits[{i}]",
                  "must be {page_size: '2MB', limit: int}")
            huge.append(HugepageLimit(str(h["page_size"]), int(h["limit"])))
        uni = res.get("unified") or {}
        _need(isinstance(uni, dict), f"{where}.unified", "must be an object")
        for k, v in uni.items():
            _need(isinstance(k, str) and "/" not in k and k not in (".", "..") and "." in k
                  and isinstance(v, str), f"{where}.unified[{k!r}]",
                  "keys must be cgroup file names like 'memory.high', values strings")
        return cls(cpu_shares=ints["cpu_shares"], cpu_quota=ints["cpu_quota"],
                   cpu_period=ints["cpu_period"], cpuset_cpus=cpusets["cpuset_cpus"],
                   cpuset_mems=cpusets["cpuset_mems"],
                   memory_limit_in_bytes=ints["memory_limit_in_bytes"],
                   memory_swap_limit_in_bytes=ints["memory_swap_limit_in_bytes"],
                   pids_limit=ints["pids_limit"], hugepage_limits=tuple(huge),
                   unified=dict(uni), oom_score_adj=ints["oom_score_adj"],
                   memory_reservation_in_bytes=ints["memory_reservation_in_bytes"],
                   memory_swappiness=ints["memory_swappiness"],
                   cpu_realtime_runtime=ints["cpu_realtime_runtime"],
                   cpu_realtime_period=ints["cpu_realtime_period"])

    def to_json(self) -> dict[str, Any]:
        """Integers left unset (None) are left out, as the daemon's resources dict does."""
        out: dict[str, Any] = {key: getattr(self, key) for key in _RESOURCE_INTS
                               if getattr(self, key) is not None}
        out.update(cpuset_cpus=self.cpuset_cpus, cpuset_mems=self.cpuset_mems,
                   hugepage_limits=[h.to_json() for h in self.hugepage_limits],
                   unified=dict(self.unified))
        return out


@dataclass(frozen=True, slots=True)
class CgroupSpec:
    path: str               # filesystem path under each hierarchy
    driver: str = "cgroupfs"  # "cgroupfs" | "systemd"
    resources: Resources = field(default_factory=Resources)

    @classmethod
    def from_json(cls, obj: Any, where: str = "cgroup") -> Self:
        _need(isinstance(obj, dict), where, "must be an object or null")
        driver = obj.get("driver", "cgroupfs")
        _need(driver in ("cgroupfs", "systemd"), f"{where}.driver",
              f"must be cgroupfs or systemd, got {driver!r}")
        path = obj.get("path")
        if driver == "systemd" and isinstance(path, str) and path.count(":") == 2:
            path = systemd_path_to_fs(path)
        _need(isinstance(path, str) and path.startswith("/") and ".." not in path.split("/"),
              f"{where}.path", "must be an absolute cgroup path without '..' (or "
              f"slice:prefix:name for systemd), got {path!r}")
        return cls(path=str(path), driver=str(driver),
                   resources=Resources.from_json(obj.get("resources"), f"{where}.resources"))

    def to_json(self) -> dict[str, Any]:
        return {"driver": self.driver, "path": self.path, "resources": self.resources.to_json()}


# --------------------------------------------------------------------------- the spec

@dataclass(frozen=True, slots=True)
class UsernsSpec:
    """The pod user namespace a container joins (pinned at `path`) and its maps."""

    path: str
    maps: IdMaps

    @classmethod
    def from_json(cls, obj: Any, where: str = "userns") -> Self:
        o = _obj(obj, where)
        return cls(path=_abs_path(o.get("path"), f"{where}.path"),
                   maps=IdMaps.parse(o, _need, where))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, **self.maps.to_json()}


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    id: str
    rootfs: RootfsSpec
    process: ProcessSpec
    pod_id: str = ""
    namespaces: tuple[Namespace, ...] = ()
    hostname: str | None = None
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()
    privileged: bool = False
    #: an OCI seccomp profile (a foreign format: runtime.seccomp parses the rest)
    seccomp: dict[str, Any] | None = None
    cgroup: CgroupSpec | None = None
    log_path: str | None = None
    log_directory: str | None = None
    #: OCI hooks by kind (runtime.hooks checks them)
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cdi_devices: tuple[str, ...] = ()
    intel_rdt: dict[str, Any] | None = None
    userns: UsernsSpec | None = None  # a pod user namespace; None: the host's
    #: namespaced sysctls (runtime.sysctls) written by the init inside its namespaces
    sysctls: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        """Parse (and so validate) a spec; raises InvalidArgument naming the field."""
        _need(isinstance(obj, dict), "spec", "must be a JSON object")
        s: dict[str, Any] = obj
        cid = s.get("id")
        _need(isinstance(cid, str) and cid != "" and "/" not in cid, "id",
              f"must be a non-empty name without '/', got {cid!r}")
        pod_id = s.get("pod_id", "")
        _need(isinstance(pod_id, str), "pod_id", f"must be a string, got {pod_id!r}")
        privileged = _bool(s.get("privileged", False), "privileged")
        rootfs = RootfsSpec.from_json(s.get("rootfs"))
        process = ProcessSpec.from_json(s.get("process"), privileged=privileged)
        namespaces = tuple(Namespace.from_json(e, f"namespaces[{i}]")
                           for i, e in enumerate(_list(s.get("namespaces", []), "namespaces")))
        seen: set[str] = set()
        for i, ns in enumerate(namespaces):
            _need(ns.type not in seen, f"namespaces[{i}].type", f"{ns.type} listed twice")
            seen.add(ns.type)
        hostname = s.get("hostname")
        _need(hostname is None or (isinstance(hostname, str) and len(hostname) <= 64),
              "hostname", "must be a string of at most 64 bytes or null")
        mounts = tuple(Mount.from_json(m, f"mounts[{i}]")
                       for i, m in enumerate(_list(s.get("mounts", []), "mounts")))
        devices = tuple(Device.from_json(d, f"devices[{i}]")
                        for i, d in enumerate(_list(s.get("devices", []), "devices")))
        paths: dict[str, tuple[str, ...]] = {}
        for key in ("masked_paths", "readonly_paths"):
            paths[key] = _str_list(s.get(key, []), key)
            for i, p in enumerate(paths[key]):
                _abs_path(p, f"{key}[{i}]")
        prof = s.get("seccomp")
        if prof is not None:
            _need(isinstance(prof, dict) and isinstance(prof.get("defaultAction"), str),
                  "seccomp", "must be an OCI seccomp profile with a defaultAction, or null")
            _need(isinstance(prof.get("syscalls", []) or [], list), "seccomp.syscalls",
                  "must be a list")
        cg = s.get("cgroup")
        u = s.get("userns")
        userns = None if u is None else UsernsSpec.from_json(u)
        _need(userns is None or not privileged, "userns",
              "a privileged container cannot run in a pod user namespace")
        log_path = _opt_abs_path(s.get("log_path") or None, "log_path")
        log_dir = _opt_abs_path(s.get("log_directory") or None, "log_directory")
        if log_path is not None and log_dir is not None:
            _need(log_path.startswith(os.path.normpath(log_dir).rstrip("/") + "/")
                  and os.path.normpath(log_path) == log_path, "log_path",
                  f"must be a normalized path below log_directory {log_dir!r}")
        annotations = s.get("annotations") or {}
        _need(isinstance(annotations, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()),
            "annotations", "must be an object of strings")
        sysctls = s.get("sysctls") or {}
        _need(isinstance(sysctls, dict) and all(isinstance(k, str) for k in sysctls), "sysctls",
              "must be an object of name -> value")
        own = [{"network": "net"}.get(n.type, n.type) for n in namespaces]
        try:
            check_sysctls(sysctls, own)
        except ValueError as e:
            raise InvalidArgument(f"container spec: sysctls: {e}") from None
        return cls(id=str(cid), pod_id=pod_id, rootfs=rootfs, process=process,
                   namespaces=namespaces, hostname=hostname, mounts=mounts, devices=devices,
                   masked_paths=paths["masked_paths"], readonly_paths=paths["readonly_paths"],
                   privileged=privileged, seccomp=prof,
                   cgroup=None if cg is None else CgroupSpec.from_json(cg),
                   log_path=log_path, log_directory=log_dir,
                   hooks=oci_hooks.validate_hooks(s.get("hooks")), annotations=dict(annotations),
                   cdi_devices=_str_list(s.get("cdi_devices", []), "cdi_devices"),
                   intel_rdt=resctrl.validate(s.get("intel_rdt")), userns=userns,
                   sysctls=dict(sysctls))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pod_id": self.pod_id, "rootfs": self.rootfs.to_json(),
                "process": self.process.to_json(),
                "namespaces": [n.to_json() for n in self.namespaces],
                "hostname": self.hostname, "mounts": [m.to_json() for m in self.mounts],
                "devices": [d.to_json() for d in self.devices],
                "masked_paths": list(self.masked_paths),
                "readonly_paths": list(self.readonly_paths), "privileged": self.privileged,
                "seccomp": self.seccomp,
                "cgroup": None if self.cgroup is None else self.cgroup.to_json(),
                "log_path": self.log_path, "log_directory": self.log_directory,
                **self._optional_json()}

    def _optional_json(self) -> dict[str, Any]:
        """Fields added later (OCI hooks, CDI, the pod user namespace), written only when set:
        a spec that uses none of them has the JSON form of the version before them."""
        out: dict[str, Any] = {}
        if self.hooks:
            out["hooks"] = {k: [dict(h) for h in v] for k, v in self.hooks.items()}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.cdi_devices:
            out["cdi_devices"] = list(self.cdi_devices)
        if self.intel_rdt is not None:
            out["intel_rdt"] = dict(self.intel_rdt)
        if self.sysctls:
            out["sysctls"] = dict(self.sysctls)
        if self.userns is not None:
            out["userns"] = self.userns.to_json()
        return out

    def namespace_paths(self) -> dict[str, str | None]:
        """type -> path (None: a new namespace) of the listed namespaces."""
        return {n.type: n.path for n in self.namespaces}


# --------------------------------------------------------------------------- building blocks

def default_capabilities() -> list[str]:
    """The default capability names (a fresh list)."""
    return list(DEFAULT_CAPABILITIES)


def all_capabilities() -> list[str]:
    """Every capability the running kernel knows (what privileged containers get)."""
    return list(CAPABILITY_NAMES[: last_cap() + 1])


def compute_capabilities(add: list[str] | None = None, drop: list[str] | None = None,
                         add_ambient: list[str] | None = None,
                         privileged: bool = False) -> Capabilities:
    """Capability sets from CRI's add/drop/ambient lists, as containerd computes them.

    Start from the default set (all capabilities when privileged); "ALL" in `add` adds every
    capability and "ALL" in `drop` removes every one *before* the individual names are applied,
    so add=[ALL], drop=[CHOWN] is everything but CAP_CHOWN and drop=[ALL], add=[CHOWN] is only
    CAP_CHOWN. Names may be given with or without the CAP_ prefix, any case. Ambient
    capabilities are also put into every other set (the kernel requires them in permitted and
    inheritable). Inheritable is otherwise empty (CVE-2022-24769).
    """
    adds = _normalize_caps(add, "capabilities.add_capabilities")
    drops = _normalize_caps(drop, "capabilities.drop_capabilities")
    ambient = _normalize_caps(add_ambient, "capabilities.add_ambient_capabilities")
    if "ALL" in ambient:
        raise InvalidArgument("capabilities.add_ambient_capabilities: 'ALL' is not allowed")
    known = all_capabilities()
    caps: list[str] = known if privileged else default_capabilities()
    if not privileged:
        if "ALL" in adds:
            caps = list(known)
        if "ALL" in drops:
            caps = []
        for name in adds:
            if name != "ALL" and name not in caps:
                caps.append(name)
        caps = [c for c in caps if c not in drops]
    for name in ambient:
        if name not in caps:
            caps.append(name)
    order = {n: i for i, n in enumerate(CAPABILITY_NAMES)}
    full = tuple(sorted(set(caps), key=order.__getitem__))
    amb = tuple(sorted(set(ambient), key=order.__getitem__))
    return Capabilities(bounding=full, effective=full, permitted=full, inheritable=amb,
                        ambient=amb)


def default_mounts(privileged: bool = False, delegated_cgroup: bool = False) -> list[Mount]:
    """The mounts every container gets first (containerd's defaults): proc, /dev tmpfs, devpts,
    shm, mqueue, sysfs (read-only unless privileged), cgroup (read-only unless privileged, or
    `delegated_cgroup`: a container of a pod user namespace on cgroup v2 whose cgroup the init
    delegates to its root, see container_init.cgroup_delegation)."""
    ro = not privileged
    sys_opts = ("nosuid", "noexec", "nodev") + (("ro",) if ro else ())
    cg_ro = ro and not delegated_cgroup
    cg_opts = ("nosuid", "noexec", "nodev") + (("ro",) if cg_ro else ())
    return [
        Mount("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
        Mount("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
        Mount("/dev/pts", "devpts", "devpts",
              ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")),
        Mount("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777",
                                           "size=65536k")),
        Mount("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
        Mount("/sys", "sysfs", "sysfs", sys_opts, readonly=ro),
        Mount("/sys/fs/cgroup", "cgroup", "cgroup", (*cg_opts, "relatime"), readonly=cg_ro),
    ]


def bind_mount(source: str, destination: str, readonly: bool = False,
               recursive_readonly: bool = False, propagation: str | None = None,
               options: tuple[str, ...] = ("rbind",)) -> Mount:
    """A Mount entry for a CRI volume (`ContainerConfig.mounts[i]`)."""
    return Mount(destination=destination, type="bind", source=source, options=options,
                 propagation=propagation, readonly=readonly or recursive_readonly,
                 recursive_readonly=recursive_readonly)


def default_masked_paths() -> list[str]:
    return list(DEFAULT_MASKED_PATHS)


def default_readonly_paths() -> list[str]:
    return list(DEFAULT_READONLY_PATHS)


def default_rlimits() -> list[Rlimit]:
    return list(DEFAULT_RLIMITS)
