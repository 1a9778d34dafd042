"""Plugins' ContainerAdjustments: merged in plugin order, conflicts named, applied to a spec.

Every plugin sees the container as the CRI asked for it; their adjustments are merged one
plugin after another. Each adjusted thing has one owner: a second plugin setting the same
annotation, environment variable, mount destination, rlimit or resource field is a conflict,
and CreateContainer fails naming both plugins (as upstream NRI does). A key starting with
"-" (annotations, env, mounts) asks for that entry's removal.

Applied here: annotations, environment, args, mounts (add, replace, remove), rlimits,
oom_score_adj, the cgroup path and resources (memory limit/swap/reservation/swappiness, cpu
shares/quota/period/realtime, cpuset cpus/mems, pids limit, hugepage limits, unified), OCI
hooks (appended, each plugin's after the spec's: prestart runs as createRuntime, as with CDI),
linux devices (added with an rwm devices-cgroup rule, "-path" removes one;
resources.devices rules may set the access of a device the plugins add), CDI devices (resolved
through the container manager's CDI registry and injected like CRI-requested ones),
namespaces (type replaced or, "-type", removed), the seccomp policy (an OCI profile replacing
the container's) and the RDT settings (linux.rdt, when the host has resctrl).

Refused, failing CreateContainer with an error naming the field (never dropped silently):
what the container spec cannot express (linux.scheduler, linux.io_priority,
linux.memory_policy, linux.net_devices, kernel memory / OOM-killer flags: UNIMPLEMENTED)
and classes pycri has no configuration for (blockio_class, rdt_class: FAILED_PRECONDITION).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cri_server.cdi import inject
from cri_server.cdi.registry import Resolved
from proto import nri_api_pb2 as nri
from pycri_common.errors import FailedPrecondition, InvalidArgument, Unimplemented
from runtime import container_spec

_PROPAGATION = {"private": "private", "rprivate": "private", "slave": "rslave",
                "rslave": "rslave", "shared": "rshared", "rshared": "rshared"}
# adjustments the ContainerSpec has no field for: (field, why)
_UNSUPPORTED_LINUX = (
    ("net_devices", "moving host network interfaces into a container is not supported"),
    ("scheduler", "the container spec has no scheduling policy"),
    ("io_priority", "the container spec has no I/O priority"),
    ("memory_policy", "the container spec has no NUMA memory policy"))
_HOOK_KINDS = (("prestart", "createRuntime"), ("create_runtime", "createRuntime"),
               ("create_container", "createContainer"), ("start_container", "startContainer"),
               ("poststart", "poststart"), ("poststop", "poststop"))
_NS_TYPES = {"net": "network", "network": "network", "ipc": "ipc", "uts": "uts", "pid": "pid",
             "mnt": "mount", "mount": "mount", "cgroup": "cgroup"}
CdiResolver = Callable[[list[str]], list[Resolved]]


# NRI LinuxMemory / LinuxCPU optional fields -> ContainerSpec resource names
_MEMORY_FIELDS = (("limit", "memory_limit_in_bytes"), ("swap", "memory_swap_limit_in_bytes"),
                  ("reservation", "memory_reservation_in_bytes"),
                  ("swappiness", "memory_swappiness"))
_CPU_FIELDS = (("shares", "cpu_shares"), ("quota", "cpu_quota"), ("period", "cpu_period"),
               ("realtime_runtime", "cpu_realtime_runtime"),
               ("realtime_period", "cpu_realtime_period"))


def resource_update(r: nri.LinuxResources) -> dict[str, Any]:
    """NRI LinuxResources as ContainerSpec resource names; only what is set."""
    out: dict[str, Any] = {}
    if r.HasField("memory"):
        for name, key in _MEMORY_FIELDS:
            if r.memory.HasField(name):
                out[key] = getattr(r.memory, name).value
    if r.HasField("cpu"):
        c = r.cpu
        for name, key in _CPU_FIELDS:
            if c.HasField(name):
                out[key] = getattr(c, name).value
        if c.cpus:
            out["cpuset_cpus"] = c.cpus
        if c.mems:
            out["cpuset_mems"] = c.mems
    if r.HasField("pids"):
        out["pids_limit"] = r.pids.limit
    if r.hugepage_limits:
        out["hugepage_limits"] = [{"page_size": h.page_size, "limit": int(h.limit)}
                                  for h in r.hugepage_limits]
    if r.unified:
        out["unified"] = dict(r.unified)
    return out


def _refused(adj: nri.ContainerAdjustment, plugin: str) -> None:
    if not adj.HasField("linux"):
        return
    lin = adj.linux
    bad = []
    for name, why in _UNSUPPORTED_LINUX:
        if lin.HasField(name) if name != "net_devices" else getattr(lin, name):
            bad.append(f"linux.{name} ({why})")
    res = lin.resources
    if res.HasField("memory"):
        for k in ("kernel", "kernel_tcp", "disable_oom_killer", "use_hierarchy"):
            if res.memory.HasField(k):
                bad.append(f"linux.resources.memory.{k} (not in the container spec)")
    if bad:
        raise Unimplemented(f"NRI plugin {plugin} asks for adjustments pycri cannot apply: "
                            f"{'; '.join(bad)}")
    for name in ("blockio_class", "rdt_class"):
        if res.HasField(name):
            raise FailedPrecondition(
                f"NRI plugin {plugin}: linux.resources.{name} "
                f"{getattr(res, name).value!r}: pycri has no {name.split('_')[0]} classes "
                "configured")


_COMPOUND = {"annotation": nri.Annotations, "mount": nri.Mounts, "device": nri.Devices,
             "CDI device": nri.CdiDevices, "environment variable": nri.Env,
             "rlimit": nri.Rlimits, "namespace": nri.Namespace, "sysctl": nri.Sysctl,
             "resources hugepage_limits": nri.HugepageLimits,
             "resources unified": nri.CgroupsUnified}
_SIMPLE = {"args": nri.Args, "oom_score_adj": nri.OomScoreAdj, "cgroups path": nri.CgroupsPath,
           "seccomp policy": nri.SeccompPolicy, "RDT": nri.RdtClosID,
           "resources memory_limit_in_bytes": nri.MemLimit,
           "resources memory_reservation_in_bytes": nri.MemReservation,
           "resources memory_swap_limit_in_bytes": nri.MemSwapLimit,
           "resources memory_swappiness": nri.MemSwappiness,
           "resources cpu_shares": nri.CPUShares, "resources cpu_quota": nri.CPUQuota,
           "resources cpu_period": nri.CPUPeriod,
           "resources cpu_realtime_runtime": nri.CPURealtimeRuntime,
           "resources cpu_realtime_period": nri.CPURealtimePeriod,
           "resources cpuset_cpus": nri.CPUSetCPUs, "resources cpuset_mems": nri.CPUSetMems,
           "resources pids_limit": nri.PidsLimit}


def field_owners(owners: dict[str, str]) -> nri.FieldOwners:
    """Merged.owners as NRI's FieldOwners (Field -> plugin, or Field -> key -> plugin)."""
    out = nri.FieldOwners()
    for what, plugin in owners.items():
        if what in _SIMPLE:
            out.simple[_SIMPLE[what]] = plugin
            continue
        if what.startswith("OCI hooks"):
            out.compound[nri.OciHooks].owners[plugin] = plugin
            continue
        for prefix, fld in sorted(_COMPOUND.items(), key=lambda kv: -len(kv[0])):
            if what.startswith(prefix + " "):
                out.compound[fld].owners[what[len(prefix) + 1:]] = plugin
                break
    return out


def _hook(h: nri.Hook) -> dict[str, Any]:
    return {"path": h.path, "args": list(h.args) or [h.path], "env": list(h.env),
            "timeout": h.timeout.value if h.HasField("timeout") else None}


def _device(d: nri.LinuxDevice, plugin: str) -> dict[str, Any]:
    dtype = "c" if d.type == "u" else d.type
    if dtype not in ("c", "b", "p"):
        raise InvalidArgument(f"NRI plugin {plugin}: device {d.path}: type must be c, u, b "
                              f"or p, got {d.type!r}")
    if not d.path.startswith("/"):
        raise InvalidArgument(f"NRI plugin {plugin}: device path {d.path!r} is not absolute")
    return {"host_path": d.path, "container_path": d.path,
            "permissions": "" if dtype == "p" else "rwm",
            "type": dtype, "major": int(d.major), "minor": int(d.minor),
            "file_mode": d.file_mode.value & 0o7777 if d.HasField("file_mode") else 0o666,
            "uid": d.uid.value if d.HasField("uid") else 0,
            "gid": d.gid.value if d.HasField("gid") else 0}


def _rule_matches(rule: nri.LinuxDeviceCgroup, dev: dict[str, Any]) -> bool:
    return ((rule.type in ("", "a") or rule.type == dev["type"])
            and (not rule.HasField("major") or rule.major.value == dev["major"])
            and (not rule.HasField("minor") or rule.minor.value == dev["minor"]))


def seccomp_profile(p: nri.LinuxSeccomp) -> dict[str, Any]:
    """An NRI LinuxSeccomp as the OCI profile the container spec carries."""
    out: dict[str, Any] = {"defaultAction": p.default_action,
                           "architectures": list(p.architectures), "flags": list(p.flags),
                           "syscalls": []}
    if p.HasField("default_errno"):
        out["defaultErrnoRet"] = p.default_errno.value
    if p.listener_path:
        out["listenerPath"] = p.listener_path
        out["listenerMetadata"] = p.listener_metadata
    for sc in p.syscalls:
        rule: dict[str, Any] = {"names": list(sc.names), "action": sc.action}
        if sc.HasField("errno_ret"):
            rule["errnoRet"] = sc.errno_ret.value
        if sc.args:
            rule["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two,
                             "op": a.op} for a in sc.args]
        out["syscalls"].append(rule)
    return out


@dataclass
class Merged:
    """The adjustments of every plugin so far, with who owns each adjusted thing."""

    owners: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)
    mounts: dict[str, nri.Mount | None] = field(default_factory=dict)
    args: list[str] | None = None
    rlimits: dict[str, nri.POSIXRlimit] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)
    oom_score_adj: int | None = None
    cgroups_path: str | None = None
    sysctls: dict[str, str | None] = field(default_factory=dict)  # None: remove
    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    device_rules: list[tuple[str, nri.LinuxDeviceCgroup]] = field(default_factory=list)
    cdi_devices: list[str] = field(default_factory=list)
    namespaces: dict[str, str | None | bool] = field(default_factory=dict)  # False: remove
    seccomp: dict[str, Any] | None = None
    rdt: nri.LinuxRdt | None = None
    combined: nri.ContainerAdjustment = field(default_factory=nri.ContainerAdjustment)
    plugins: list[str] = field(default_factory=list)

    def _claim(self, what: str, plugin: str) -> None:
        owner = self.owners.get(what)
        if owner is not None and owner != plugin:
            raise FailedPrecondition(f"NRI plugins {owner} and {plugin} both adjust {what}")
        self.owners[what] = plugin

    def add(self, plugin: str, adj: nri.ContainerAdjustment) -> None:
        _refused(adj, plugin)
        self.combined.MergeFrom(adj)
        if plugin not in self.plugins:
            self.plugins.append(plugin)
        for key, value in adj.annotations.items():
            name, removal = (key[1:], True) if key.startswith("-") else (key, False)
            self._claim(f"annotation {name}", plugin)
            self.annotations[name] = None if removal else value
        for kv in adj.env:
            name, removal = (kv.key[1:], True) if kv.key.startswith("-") else (kv.key, False)
            if not name or "=" in name:
                raise InvalidArgument(f"NRI plugin {plugin}: bad environment variable name "
                                      f"{name!r}")
            self._claim(f"environment variable {name}", plugin)
            self.env[name] = None if removal else kv.value
        for m in adj.mounts:
            dest, removal = ((m.destination[1:], True) if m.destination.startswith("-")
                             else (m.destination, False))
            if not dest.startswith("/"):
                raise InvalidArgument(f"NRI plugin {plugin}: mount destination {dest!r} is not "
                                      "absolute")
            self._claim(f"mount {dest}", plugin)
            self.mounts[dest] = None if removal else m
        if adj.args:
            self._claim("args", plugin)
            self.args = list(adj.args)
        for rl in adj.rlimits:
            self._claim(f"rlimit {rl.type}", plugin)
            self.rlimits[rl.type] = rl
        if adj.HasField("hooks"):
            for attr, kind in _HOOK_KINDS:
                for h in getattr(adj.hooks, attr):
                    self.owners.setdefault(f"OCI hooks ({plugin})", plugin)
                    self.hooks.setdefault(kind, []).append(_hook(h))
        for cdi in adj.CDI_devices:
            self._claim(f"CDI device {cdi.name}", plugin)
            if cdi.name not in self.cdi_devices:
                self.cdi_devices.append(cdi.name)
        if adj.HasField("linux"):
            lin = adj.linux
            for d in lin.devices:
                path, removal = (d.path[1:], True) if d.path.startswith("-") else (d.path, False)
                self._claim(f"device {path}", plugin)
                self.devices[path] = None if removal else _device(d, plugin)
            for rule in lin.resources.devices:
                self.device_rules.append((plugin, rule))
            for ns in lin.namespaces:
                name, removal = (ns.type[1:], True) if ns.type.startswith("-") else (ns.type,
                                                                                     False)
                ns_type = _NS_TYPES.get(name)
                if ns_type is None:
                    raise InvalidArgument(f"NRI plugin {plugin}: linux.namespaces: pycri "
                                          f"containers have no {name!r} namespace setting")
                self._claim(f"namespace {ns_type}", plugin)
                self.namespaces[ns_type] = False if removal else (ns.path or None)
            if lin.HasField("seccomp_policy"):
                self._claim("seccomp policy", plugin)
                self.seccomp = seccomp_profile(lin.seccomp_policy)
            if lin.HasField("rdt"):
                self._claim("RDT", plugin)
                self.rdt = lin.rdt
            if lin.HasField("resources"):
                for key, value in resource_update(lin.resources).items():
                    if key in ("hugepage_limits", "unified"):
                        for item in value if key == "hugepage_limits" else value.items():
                            sub = item["page_size"] if key == "hugepage_limits" else item[0]
                            self._claim(f"resources {key} {sub}", plugin)
                        prev = self.resources.get(key)
                        if key == "unified":
                            self.resources[key] = {**(prev or {}), **value}
                        else:
                            self.resources[key] = [*(prev or []), *value]
                        continue
                    self._claim(f"resources {key}", plugin)
                    self.resources[key] = value
            if lin.HasField("oom_score_adj"):
                if not -1000 <= lin.oom_score_adj.value <= 1000:
                    raise InvalidArgument(f"NRI plugin {plugin}: oom_score_adj "
                                          f"{lin.oom_score_adj.value} is not in [-1000, 1000]")
                self._claim("oom_score_adj", plugin)
                self.oom_score_adj = lin.oom_score_adj.value
            if lin.cgroups_path:
                self._claim("cgroups path", plugin)
                self.cgroups_path = lin.cgroups_path
            for key, value in lin.sysctl.items():  # "-name": removed (NRI's marking)
                name = key[1:] if key.startswith("-") else key
                self._claim(f"sysctl {name}", plugin)
                self.sysctls[name] = None if key.startswith("-") else value

    @property
    def empty(self) -> bool:
        return not self.owners and not self.device_rules

    def adjustment(self) -> nri.ContainerAdjustment:
        """Every plugin's adjustment in one message (for ValidateContainerAdjustment)."""
        return self.combined

    def apply(self, spec: dict[str, Any], annotations: dict[str, str],
              cdi: CdiResolver | None = None,
              resctrl: str = inject.RESCTRL) -> container_spec.ContainerSpec:
        """spec (the JSON form, changed in place) adjusted and parsed again, which validates
        it; annotations (the record's) changed in place. cdi resolves CDI device names."""
        for key, value in self.annotations.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        process = spec["process"]
        if self.env:  # a variable that is there keeps its place (as runtime-tools does)
            env, done = [], set()
            for entry in process["env"]:
                name = entry.partition("=")[0]
                if name not in self.env:
                    env.append(entry)
                elif self.env[name] is not None and name not in done:
                    env.append(f"{name}={self.env[name]}")
                    done.add(name)
            env += [f"{k}={v}" for k, v in self.env.items() if v is not None and k not in done]
            process["env"] = env
        if self.args is not None:
            process["args"] = self.args
        if self.rlimits:
            kept = [r for r in process.get("rlimits") or [] if r["type"] not in self.rlimits]
            process["rlimits"] = kept + [{"type": r.type, "soft": int(r.soft), "hard": int(r.hard)}
                                         for r in self.rlimits.values()]
        if self.oom_score_adj is not None:
            process["oom_score_adj"] = self.oom_score_adj
        if self.sysctls:  # checked by the parse below: namespaced, in the container's own
            own = dict(spec.get("sysctls") or {})
            for name, value in self.sysctls.items():
                if value is None:
                    own.pop(name, None)
                else:
                    own[name] = value
            spec["sysctls"] = own
        if self.mounts:
            spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in self.mounts]
            spec["mounts"] += [_spec_mount(m) for _, m in sorted(self.mounts.items())
                               if m is not None]
        if self.resources or self.cgroups_path:
            cgroup = spec.get("cgroup")
            if not cgroup:
                raise FailedPrecondition("NRI plugins adjust cgroup settings of a container "
                                         "that has no cgroup")
            if self.cgroups_path:
                cgroup["path"] = self.cgroups_path
            res = dict(cgroup.get("resources") or {})
            for key, value in self.resources.items():
                if key == "unified":
                    res[key] = {**(res.get(key) or {}), **value}
                elif key == "hugepage_limits":
                    by_size = {h["page_size"]: h for h in res.get(key) or []}
                    by_size.update({h["page_size"]: h for h in value})
                    res[key] = list(by_size.values())
                else:
                    res[key] = value
            cgroup["resources"] = res
        for kind, hooks in self.hooks.items():
            spec.setdefault("hooks", {}).setdefault(kind, []).extend(hooks)
        if self.devices:
            kept = [d for d in spec.get("devices") or []
                    if d.get("container_path") not in self.devices]
            spec["devices"] = kept + [d for _, d in sorted(self.devices.items()) if d]
        self._apply_device_rules(spec)
        if self.namespaces:
            nss = [n for n in spec.get("namespaces") or [] if n["type"] not in self.namespaces]
            nss += [{"type": t, "path": p} for t, p in self.namespaces.items() if p is not False]
            spec["namespaces"] = nss
        if self.seccomp is not None:
            spec["seccomp"] = self.seccomp
        if self.rdt is not None:
            self._apply_rdt(spec, resctrl)
        if self.cdi_devices:
            if cdi is None:
                raise FailedPrecondition("NRI plugins request CDI devices "
                                         f"({', '.join(self.cdi_devices)}) but this runtime "
                                         "has no CDI registry")
            inject.apply(spec, cdi(list(self.cdi_devices)), resctrl)
        return container_spec.ContainerSpec.from_json(spec)

    def _apply_device_rules(self, spec: dict[str, Any]) -> None:
        """A devices-cgroup rule sets the access of the devices the plugins add that it
        matches; pycri's cgroup rules are per device, so a rule matching none is refused."""
        added = [d for d in spec.get("devices") or []
                 if d.get("container_path") in self.devices and d.get("type")]
        for plugin, rule in self.device_rules:
            matching = [d for d in added if _rule_matches(rule, d)]
            if not matching:
                what = (f"{rule.type or 'a'} {rule.major.value if rule.HasField('major') else '*'}"
                        f":{rule.minor.value if rule.HasField('minor') else '*'} {rule.access}")
                raise Unimplemented(f"NRI plugin {plugin}: linux.resources.devices rule "
                                    f"'{what}' matches no device the plugins add (pycri "
                                    "allows device access per added device only)")
            access = rule.access or "rwm"
            if set(access) - set("rwm"):
                raise InvalidArgument(f"NRI plugin {plugin}: linux.resources.devices access "
                                      f"{access!r} is not letters of 'rwm'")
            for d in matching:
                d["permissions"] = access if rule.allow else ""

    def _apply_rdt(self, spec: dict[str, Any], resctrl: str) -> None:
        rdt = self.rdt
        assert rdt is not None
        if rdt.remove:
            spec["intel_rdt"] = None
            return
        if not os.path.isdir(os.path.join(resctrl, "info")):
            raise FailedPrecondition(f"NRI: linux.rdt needs the resctrl filesystem mounted at "
                                     f"{resctrl}, which this host does not have")
        spec["intel_rdt"] = inject.rdt_entry(
            {"l3CacheSchema": "", "memBwSchema": "",
             "schemata": list(rdt.schemata.value) if rdt.HasField("schemata") else [],
             "closID": rdt.clos_id.value if rdt.HasField("clos_id") else "",
             "enableMonitoring": rdt.HasField("enable_monitoring")
             and rdt.enable_monitoring.value}, spec["id"], resctrl)


def _spec_mount(m: nri.Mount) -> dict[str, Any]:
    options: list[str] = []
    readonly = False
    propagation = None
    for opt in m.options:
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            continue
        elif opt in _PROPAGATION:
            propagation = _PROPAGATION[opt]
        else:
            options.append(opt)
    mtype = m.type or ("bind" if {"bind", "rbind"} & set(options) else "")
    if mtype == "bind":
        if not {"bind", "rbind"} & set(options):
            options.append("rbind")
        if not m.source.startswith("/"):
            raise InvalidArgument(f"NRI mount {m.destination}: bind source {m.source!r} is not "
                                  "absolute")
    elif not mtype:
        raise InvalidArgument(f"NRI mount {m.destination}: no type")
    return {"destination": m.destination, "type": mtype, "source": m.source,
            "options": options, "propagation": propagation, "readonly": readonly,
            "recursive_readonly": False}
