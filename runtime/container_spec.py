"""ContainerSpec: the dict the daemon builds for one container (contract 4), defaults, validation.

The daemon builds the spec from CreateContainerRequest + image config with the helpers here,
passes it through the shim to ``runtime.container_init.run`` (contract 5), which re-validates it.

Schema (every path absolute)::

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
                 "capabilities": compute_capabilities(...)  # names like "CAP_CHOWN"
                 "no_new_privs": bool, "oom_score_adj": int|null,
                 "rlimits": [{"type": "RLIMIT_NOFILE", "soft": int, "hard": int}],
                 "apparmor_profile": null | "unconfined" | "runtime/default" | "localhost/<name>"},
     "namespaces": [{"type": "network"|"ipc"|"uts"|"pid"|"mount"|"cgroup", "path": str|null}],
                 # listed with path = join; listed without path = new; not listed = host's.
                 # "mount" is always new for run() (a path there is ignored).
     "hostname": str|null,
     "userns": null | {"path": str,          # the pod's pinned user namespace (joined after the
                                            # filesystem is built; mounts are idmapped with it)
                       "uid_map": [[container_id, host_id, length]], "gid_map": [...]},
     "mounts": [Mount, ...],                # applied in order: default_mounts() first
         Mount = {"destination", "type", "source", "options": [...],
                  "propagation": "private"|"rslave"|"rshared"|null,
                  "readonly": bool, "recursive_readonly": bool}
     "devices": [{"host_path", "container_path", "permissions": "rwm"}],
     "masked_paths": [...], "readonly_paths": [...],   # as CRI sent them (empty list honoured)
     "privileged": bool,
     "seccomp": null | OCI seccomp profile dict (see runtime.seccomp.runtime_default_profile),
     "cgroup": {"driver": "cgroupfs"|"systemd",
                "path": "/kubepods/.../<ctr>" (filesystem path under each hierarchy; systemd
                        also accepts "slice:prefix:name", converted by validate_spec),
                "resources": Resources} | null,
         Resources = {"cpu_shares", "cpu_quota", "cpu_period", "cpuset_cpus", "cpuset_mems",
                      "memory_limit_in_bytes", "memory_swap_limit_in_bytes", "pids_limit",
                      "hugepage_limits": [{"page_size": "2MB", "limit": int}],
                      "unified": {key: value}, "oom_score_adj"}   # 0 / missing = not set
     "log_path": str|null,                  # the CRI log file, created by the shim
     "log_directory": str|null}             # the pod's log directory (trusted); nothing of
                                            # log_path below it is followed through a symlink

Mount types understood by the init: bind, proc, tmpfs, devpts, mqueue, sysfs, cgroup (mounts the
host's cgroup hierarchies as seen from the container's cgroup namespace), and any other
filesystem type given with a source (mounted as-is). ``options`` are mount(8)-style words:
flags (ro, nosuid, nodev, noexec, relatime, strictatime, ...) and data (mode=755, size=...).
A mount may carry ``"sub_path": str|null``: the filesystem (or bind source) is first mounted on
a staging directory private to the container's mount namespace, `sub_path` is resolved inside
it (symlinks cannot leave it; missing -> InvalidArgument) and only that is bound on the
destination (image volumes with `image_sub_path`).
"""
from __future__ import annotations

import copy
import os
from typing import Any, cast

from pycri_common.errors import InvalidArgument
from runtime import arglimits
from runtime.capability_names import CAPABILITY_NAMES, last_cap, normalize_capability
from runtime.cgroups.naming import systemd_path_to_fs

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

#: Default rlimits (hard limits above the runtime's own are clamped by the init: no
#: CAP_SYS_RESOURCE guaranteed).
DEFAULT_RLIMITS: tuple[dict[str, Any], ...] = (
    {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524288},
)

RLIMIT_TYPES: tuple[str, ...] = (
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
    "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
)

NAMESPACE_TYPES: tuple[str, ...] = ("network", "ipc", "uts", "pid", "mount", "cgroup")
PROPAGATIONS: tuple[str | None, ...] = ("private", "rslave", "rshared", None)
CAP_SET_NAMES: tuple[str, ...] = ("bounding", "effective", "permitted", "inheritable", "ambient")


def default_capabilities() -> list[str]:
    """The default capability names (a fresh list)."""
    return list(DEFAULT_CAPABILITIES)


def all_capabilities() -> list[str]:
    """Every capability the running kernel knows (what privileged containers get)."""
    return list(CAPABILITY_NAMES[: last_cap() + 1])


def _normalize_list(names: list[str] | None, field: str) -> list[str]:
    out: list[str] = []
    for name in names or []:
        norm = normalize_capability(name) if isinstance(name, str) else None
        if norm is None:
            raise InvalidArgument(f"{field}: unknown capability {name!r}")
        out.append(norm)
    return out


def compute_capabilities(add: list[str] | None = None, drop: list[str] | None = None,
                         add_ambient: list[str] | None = None,
                         privileged: bool = False) -> dict[str, list[str]]:
    """Capability sets from CRI's add/drop/ambient lists, as containerd computes them.

    Start from the default set (all capabilities when privileged); "ALL" in `add` adds every
    capability and "ALL" in `drop` removes every one *before* the individual names are applied,
    so add=[ALL], drop=[CHOWN] is everything but CAP_CHOWN and drop=[ALL], add=[CHOWN] is only
    CAP_CHOWN. Names may be given with or without the CAP_ prefix, any case. Ambient
    capabilities are also put into every other set (the kernel requires them in permitted and
    inheritable). Inheritable is otherwise empty (CVE-2022-24769).
    """
    adds = _normalize_list(add, "capabilities.add_capabilities")
    drops = _normalize_list(drop, "capabilities.drop_capabilities")
    ambient = _normalize_list(add_ambient, "capabilities.add_ambient_capabilities")
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
    caps = sorted(set(caps), key=order.__getitem__)
    amb = sorted(set(ambient), key=order.__getitem__)
    return {"bounding": list(caps), "effective": list(caps), "permitted": list(caps),
            "inheritable": list(amb), "ambient": amb}


def default_mounts(privileged: bool = False) -> list[dict[str, Any]]:
    """The mounts every container gets first (containerd's defaults): proc, /dev tmpfs, devpts,
    shm, mqueue, sysfs (read-only unless privileged), cgroup (read-only unless privileged)."""
    ro = not privileged
    sys_opts = ["nosuid", "noexec", "nodev"] + (["ro"] if ro else [])
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts",
               ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777",
                                            "size=65536k"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", sys_opts, readonly=ro),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", sys_opts + ["relatime"], readonly=ro),
    ]


def _mount(dest: str, mtype: str, source: str, options: list[str],
           readonly: bool = False) -> dict[str, Any]:
    return {"destination": dest, "type": mtype, "source": source, "options": options,
            "propagation": None, "readonly": readonly, "recursive_readonly": False}


def bind_mount(source: str, destination: str, readonly: bool = False,
               recursive_readonly: bool = False,
               propagation: str | None = None) -> dict[str, Any]:
    """A Mount entry for a CRI volume (`ContainerConfig.mounts[i]`)."""
    return {"destination": destination, "type": "bind", "source": source, "options": ["rbind"],
            "propagation": propagation, "readonly": readonly or recursive_readonly,
            "recursive_readonly": recursive_readonly}


def default_masked_paths() -> list[str]:
    return list(DEFAULT_MASKED_PATHS)


def default_readonly_paths() -> list[str]:
    return list(DEFAULT_READONLY_PATHS)


def default_rlimits() -> list[dict[str, Any]]:
    return copy.deepcopy(list(DEFAULT_RLIMITS))


# --------------------------------------------------------------------------- validation

def _need(cond: bool, field: str, msg: str) -> None:
    if not cond:
        raise InvalidArgument(f"container spec: {field}: {msg}")


def _abs_path(value: Any, field: str) -> str:
    _need(isinstance(value, str) and value.startswith("/") and "\0" not in value, field,
          f"must be an absolute path, got {value!r}")
    return str(value)


def _opt_int(value: Any, field: str) -> int | None:
    if value is None:
        return None
    _need(isinstance(value, int) and not isinstance(value, bool), field,
          f"must be an integer or null, got {value!r}")
    return int(value)


def _bool(value: Any, field: str) -> bool:
    _need(isinstance(value, bool), field, f"must be true or false, got {value!r}")
    return bool(value)


def _str_list(value: Any, field: str) -> list[str]:
    _need(isinstance(value, list) and all(isinstance(v, str) for v in value), field,
          f"must be a list of strings, got {value!r}")
    return list(value)


def validate_spec(spec: Any) -> dict[str, Any]:
    """Check a ContainerSpec and return a copy with optional fields filled with defaults.

    Raises InvalidArgument naming the field at fault. Nothing touches the system.
    """
    _need(isinstance(spec, dict), "spec", "must be a JSON object")
    s: dict[str, Any] = copy.deepcopy(spec)
    _need(isinstance(s.get("id"), str) and s["id"] != "" and "/" not in s["id"], "id",
          f"must be a non-empty name without '/', got {s.get('id')!r}")
    s.setdefault("pod_id", "")
    _validate_rootfs(s)
    _validate_process(s)
    _validate_namespaces(s)
    s.setdefault("hostname", None)
    _need(s["hostname"] is None or (isinstance(s["hostname"], str) and len(s["hostname"]) <= 64),
          "hostname", "must be a string of at most 64 bytes or null")
    s["privileged"] = _bool(s.get("privileged", False), "privileged")
    _validate_userns(s)
    _validate_mounts(s)
    s.setdefault("devices", [])
    _need(isinstance(s["devices"], list), "devices", "must be a list")
    for i, dev in enumerate(s["devices"]):
        f = f"devices[{i}]"
        _need(isinstance(dev, dict), f, "must be an object")
        _abs_path(dev.get("host_path"), f + ".host_path")
        dev["container_path"] = _abs_path(dev.get("container_path") or dev.get("host_path"),
                                          f + ".container_path")
        perms = dev.setdefault("permissions", "rwm") or "rwm"
        _need(isinstance(perms, str) and set(perms) <= set("rwm"), f + ".permissions",
              f"must be letters of 'rwm', got {perms!r}")
    for key in ("masked_paths", "readonly_paths"):
        s[key] = _str_list(s.get(key, []), key)
        for i, p in enumerate(s[key]):
            _abs_path(p, f"{key}[{i}]")
    s.setdefault("seccomp", None)
    if s["seccomp"] is not None:
        prof = s["seccomp"]
        _need(isinstance(prof, dict) and isinstance(prof.get("defaultAction"), str),
              "seccomp", "must be an OCI seccomp profile with a defaultAction, or null")
        _need(isinstance(prof.get("syscalls", []) or [], list), "seccomp.syscalls",
              "must be a list")
    _validate_cgroup(s)
    _validate_log_path(s)
    return s


def _validate_log_path(s: dict[str, Any]) -> None:
    for key in ("log_path", "log_directory"):
        s[key] = s.get(key) or None
        if s[key] is not None:
            _abs_path(s[key], key)
    if s["log_path"] is not None and s["log_directory"] is not None:
        _need(s["log_path"].startswith(os.path.normpath(s["log_directory"]).rstrip("/") + "/")
              and os.path.normpath(s["log_path"]) == s["log_path"], "log_path",
              f"must be a normalized path below log_directory {s['log_directory']!r}")


def _validate_rootfs(s: dict[str, Any]) -> None:
    r: Any = s.get("rootfs")
    _need(isinstance(r, dict), "rootfs", "must be an object")
    _need(isinstance(r.get("lower"), list) and len(r["lower"]) > 0, "rootfs.lower",
          "must be a non-empty list of layer directories")
    for i, d in enumerate(r["lower"]):
        _abs_path(d, f"rootfs.lower[{i}]")
        _need(":" not in d and "," not in d, f"rootfs.lower[{i}]",
              "must not contain ':' or ',' (overlay option syntax)")
    for key in ("upper", "work"):
        _abs_path(r.get(key), f"rootfs.{key}")
        _need("," not in r[key] and ":" not in r[key], f"rootfs.{key}",
              "must not contain ':' or ','")
    if r.get("mountpoint") is None:
        r["mountpoint"] = os.path.join(os.path.dirname(r["upper"].rstrip("/")), "rootfs")
    _abs_path(r["mountpoint"], "rootfs.mountpoint")
    r["readonly"] = _bool(r.get("readonly", False), "rootfs.readonly")


def _validate_process(s: dict[str, Any]) -> None:
    p: Any = s.get("process")
    _need(isinstance(p, dict), "process", "must be an object")
    args = p.get("args")
    _need(isinstance(args, list) and len(args) > 0 and all(isinstance(a, str) for a in args)
          and args[0] != "", "process.args",
          "must be a non-empty list of strings (no command and no image entrypoint/cmd?)")
    env = _str_list(p.setdefault("env", []), "process.env")
    for i, kv in enumerate(env):
        _need("=" in kv and not kv.startswith("=") and "\0" not in kv, f"process.env[{i}]",
              f"must be KEY=VALUE, got {kv!r}")
    arglimits.check_exec_size(args, env, "container spec: process.args and process.env")
    p["cwd"] = _abs_path(p.get("cwd") or "/", "process.cwd")
    for key in ("tty", "stdin", "stdin_once", "no_new_privs"):
        p[key] = _bool(p.get(key, False), f"process.{key}")
    validate_user(p.setdefault("user", {}), "process.user")
    caps = p.get("capabilities")
    if caps is None:
        caps = compute_capabilities(privileged=bool(s.get("privileged", False)))
    _need(isinstance(caps, dict), "process.capabilities", "must be an object")
    for key in CAP_SET_NAMES:
        names = _str_list(caps.get(key, []), f"process.capabilities.{key}")
        norm = _normalize_list(names, f"process.capabilities.{key}")
        _need("ALL" not in norm, f"process.capabilities.{key}",
              "'ALL' must be expanded (use compute_capabilities)")
        caps[key] = norm
    p["capabilities"] = caps
    oom = _opt_int(p.get("oom_score_adj"), "process.oom_score_adj")
    _need(oom is None or -1000 <= oom <= 1000, "process.oom_score_adj",
          f"must be between -1000 and 1000, got {oom}")
    p["oom_score_adj"] = oom
    rl = p.get("rlimits")
    if rl is None:
        rl = default_rlimits()
    _need(isinstance(rl, list), "process.rlimits", "must be a list")
    for i, lim in enumerate(rl):
        f = f"process.rlimits[{i}]"
        _need(isinstance(lim, dict) and lim.get("type") in RLIMIT_TYPES, f + ".type",
              f"must be one of {', '.join(RLIMIT_TYPES)}")
        soft = _opt_int(lim.get("soft"), f + ".soft")
        hard = _opt_int(lim.get("hard"), f + ".hard")
        _need(soft is not None and hard is not None and 0 <= soft <= hard, f,
              f"needs 0 <= soft <= hard, got soft={soft} hard={hard}")
    p["rlimits"] = rl
    aa = p.setdefault("apparmor_profile", None)
    _need(aa is None or isinstance(aa, str), "process.apparmor_profile",
          "must be a string or null")


def validate_user(u: Any, field: str) -> dict[str, Any]:
    """Check (and fill defaults of) a process user object in place."""
    _need(isinstance(u, dict), field, "must be an object")
    for key in ("uid", "gid"):
        v = _opt_int(u.setdefault(key, None), f"{field}.{key}")
        _need(v is None or 0 <= v < 2**32 - 1, f"{field}.{key}", f"out of range: {v}")
    for key in ("username", "groupname"):
        v = u.setdefault(key, None)
        _need(v is None or (isinstance(v, str) and v != "" and ":" not in v and "\n" not in v),
              f"{field}.{key}", f"must be a name without ':' or null, got {v!r}")
    groups = u.setdefault("supplemental_groups", [])
    _need(isinstance(groups, list) and all(isinstance(g, int) and not isinstance(g, bool)
                                           and 0 <= g < 2**32 - 1 for g in groups),
          f"{field}.supplemental_groups", f"must be a list of group ids, got {groups!r}")
    pol = u.setdefault("policy", "Merge") or "Merge"
    _need(pol in ("Merge", "Strict"), f"{field}.policy", f"must be Merge or Strict, got {pol!r}")
    u["policy"] = pol
    _need(not (u["uid"] is not None and u["username"] is not None), field,
          "give uid or username, not both")
    _need(not (u["gid"] is not None and u["groupname"] is not None), field,
          "give gid or groupname, not both")
    return cast("dict[str, Any]", u)  # checked to be a dict above


def _validate_namespaces(s: dict[str, Any]) -> None:
    ns = s.setdefault("namespaces", [])
    _need(isinstance(ns, list), "namespaces", "must be a list")
    seen: set[str] = set()
    for i, entry in enumerate(ns):
        f = f"namespaces[{i}]"
        _need(isinstance(entry, dict) and entry.get("type") in NAMESPACE_TYPES, f + ".type",
              f"must be one of {', '.join(NAMESPACE_TYPES)}")
        _need(entry["type"] not in seen, f + ".type", f"{entry['type']} listed twice")
        seen.add(entry["type"])
        entry.setdefault("path", None)
        if entry["path"] is not None:
            _abs_path(entry["path"], f + ".path")


def _validate_userns(s: dict[str, Any]) -> None:
    u = s.setdefault("userns", None)
    if u is None:
        return
    _need(isinstance(u, dict), "userns", "must be an object or null")
    _abs_path(u.get("path"), "userns.path")
    for key in ("uid_map", "gid_map"):
        m = u.get(key)
        _need(isinstance(m, list) and len(m) > 0 and all(
            isinstance(e, list) and len(e) == 3
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in e)
            and e[2] > 0 for e in m), f"userns.{key}",
            f"must be a non-empty list of [container_id, host_id, length], got {m!r}")
        _need(any(c == 0 for c, _, _ in m), f"userns.{key}", "must map container ID 0")
    _need(not s["privileged"], "userns",
          "a privileged container cannot run in a pod user namespace")


def _validate_mounts(s: dict[str, Any]) -> None:
    mounts = s.setdefault("mounts", [])
    _need(isinstance(mounts, list), "mounts", "must be a list")
    for i, m in enumerate(mounts):
        f = f"mounts[{i}]"
        _need(isinstance(m, dict), f, "must be an object")
        _abs_path(m.get("destination"), f + ".destination")
        _need(isinstance(m.get("type"), str) and m["type"] != "", f + ".type",
              "must be a filesystem type or 'bind'")
        m.setdefault("source", m["type"])
        if m["type"] == "bind":
            _abs_path(m["source"], f + ".source")
        else:
            _need(isinstance(m["source"], str), f + ".source", "must be a string")
        m["options"] = _str_list(m.get("options", []), f + ".options")
        m["readonly"] = _bool(m.get("readonly", False), f + ".readonly")
        m["recursive_readonly"] = _bool(m.get("recursive_readonly", False),
                                        f + ".recursive_readonly")
        sub = m.setdefault("sub_path", None)
        _need(sub is None or isinstance(sub, str), f + ".sub_path", "must be a string or null")
        prop = m.setdefault("propagation", None)
        _need(prop in PROPAGATIONS, f + ".propagation",
              f"must be private, rslave, rshared or null, got {prop!r}")
        if m["recursive_readonly"]:
            # the three rules CRI defines for recursive_read_only
            _need(m["readonly"], f + ".recursive_readonly", "requires readonly")
            _need(prop in (None, "private"), f + ".recursive_readonly",
                  f"requires private propagation, got {prop}")
            _need(m["type"] == "bind", f + ".recursive_readonly", "only for bind mounts")


def _validate_cgroup(s: dict[str, Any]) -> None:
    cg: Any = s.setdefault("cgroup", None)
    if cg is None:
        return
    _need(isinstance(cg, dict), "cgroup", "must be an object or null")
    _need(cg.get("driver", "cgroupfs") in ("cgroupfs", "systemd"), "cgroup.driver",
          f"must be cgroupfs or systemd, got {cg.get('driver')!r}")
    cg.setdefault("driver", "cgroupfs")
    path = cg.get("path")
    if cg["driver"] == "systemd" and isinstance(path, str) and path.count(":") == 2:
        path = cg["path"] = systemd_path_to_fs(path)
    _need(isinstance(path, str) and path.startswith("/") and ".." not in path.split("/"),
          "cgroup.path", f"must be an absolute cgroup path without '..' (or slice:prefix:name "
          f"for systemd), got {path!r}")
    res = cg.setdefault("resources", {}) or {}
    _need(isinstance(res, dict), "cgroup.resources", "must be an object")
    for key in ("cpu_shares", "cpu_quota", "cpu_period", "memory_limit_in_bytes",
                "memory_swap_limit_in_bytes", "pids_limit", "oom_score_adj"):
        _opt_int(res.get(key), f"cgroup.resources.{key}")
    for key in ("cpuset_cpus", "cpuset_mems"):
        v = res.get(key)
        _need(v is None or (isinstance(v, str) and all(c in "0123456789,- " for c in v)),
              f"cgroup.resources.{key}", f"must be a cpu/node list like '0-2,4', got {v!r}")
    for i, h in enumerate(res.get("hugepage_limits") or []):
        _need(isinstance(h, dict) and isinstance(h.get("page_size"), str)
              and isinstance(h.get("limit"), int), f"cgroup.resources.hugepage_limits[{i}]",
              "must be {page_size: '2MB', limit: int}")
    uni = res.get("unified") or {}
    _need(isinstance(uni, dict), "cgroup.resources.unified", "must be an object")
    for k, v in uni.items():
        _need(isinstance(k, str) and "/" not in k and k not in (".", "..") and "." in k
              and isinstance(v, str), f"cgroup.resources.unified[{k!r}]",
              "keys must be cgroup file names like 'memory.high', values strings")
    cg["resources"] = res
