"""Plugins' ContainerAdjustments: merged in plugin order, conflicts named, applied to a spec.

Every plugin sees the container as the CRI asked for it; their adjustments are merged one
plugin after another. Each adjusted thing has one owner: a second plugin setting the same
annotation, environment variable, mount destination, rlimit or resource field is a conflict,
and CreateContainer fails naming both plugins (as upstream NRI does). A key starting with
"-" (annotations, env, mounts) asks for that entry's removal.

Applied here: annotations, environment, args, mounts (add, replace, remove), rlimits,
oom_score_adj, the cgroup path and resources (memory limit/swap, cpu shares/quota/period,
cpuset cpus/mems, pids limit, hugepage limits, unified). Adjustments pycri's runtime cannot
carry out (devices, CDI devices, OCI hooks, namespaces, seccomp policy, sysctls, scheduler,
I/O priority, RDT, memory policy, network devices, blockio/RDT class) fail the request with
UNIMPLEMENTED rather than being dropped silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proto import nri_api_pb2 as nri
from pycri_common.errors import FailedPrecondition, InvalidArgument, Unimplemented
from runtime import container_spec

_PROPAGATION = {"private": "private", "rprivate": "private", "slave": "rslave",
                "rslave": "rslave", "shared": "rshared", "rshared": "rshared"}
_UNSUPPORTED_LINUX = ("devices", "io_priority", "seccomp_policy", "namespaces", "sysctl",
                      "net_devices", "scheduler", "rdt", "memory_policy")


def resource_update(r: nri.LinuxResources) -> dict[str, Any]:
    """NRI LinuxResources as ContainerSpec resource names; only what is set."""
    out: dict[str, Any] = {}
    if r.HasField("memory"):
        m = r.memory
        if m.HasField("limit"):
            out["memory_limit_in_bytes"] = m.limit.value
        if m.HasField("swap"):
            out["memory_swap_limit_in_bytes"] = m.swap.value
    if r.HasField("cpu"):
        c = r.cpu
        if c.HasField("shares"):
            out["cpu_shares"] = c.shares.value
        if c.HasField("quota"):
            out["cpu_quota"] = c.quota.value
        if c.HasField("period"):
            out["cpu_period"] = c.period.value
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


def _unsupported(adj: nri.ContainerAdjustment) -> list[str]:
    found = []
    if adj.CDI_devices:
        found.append("CDI devices")
    if adj.HasField("hooks") and any(getattr(adj.hooks, k) for k in (
            "prestart", "create_runtime", "create_container", "start_container", "poststart",
            "poststop")):
        found.append("OCI hooks")
    if adj.HasField("linux"):
        lin = adj.linux
        for name in _UNSUPPORTED_LINUX:
            if lin.HasField(name) if name in ("io_priority", "seccomp_policy", "scheduler",
                                              "rdt", "memory_policy") else getattr(lin, name):
                found.append(f"linux.{name}")
        res = lin.resources
        if lin.HasField("resources"):
            if res.HasField("blockio_class"):
                found.append("linux.resources.blockio_class")
            if res.HasField("rdt_class"):
                found.append("linux.resources.rdt_class")
            if res.devices:
                found.append("linux.resources.devices")
            if res.HasField("memory") and any(res.memory.HasField(k) for k in (
                    "reservation", "kernel", "kernel_tcp", "swappiness", "disable_oom_killer",
                    "use_hierarchy")):
                found.append("linux.resources.memory (only limit and swap)")
            if res.HasField("cpu") and any(res.cpu.HasField(k) for k in (
                    "realtime_runtime", "realtime_period")):
                found.append("linux.resources.cpu realtime")
    return found


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

    def _claim(self, what: str, plugin: str) -> None:
        owner = self.owners.get(what)
        if owner is not None and owner != plugin:
            raise FailedPrecondition(f"NRI plugins {owner} and {plugin} both adjust {what}")
        self.owners[what] = plugin

    def add(self, plugin: str, adj: nri.ContainerAdjustment) -> None:
        bad = _unsupported(adj)
        if bad:
            raise Unimplemented(f"NRI plugin {plugin} asks for adjustments pycri does not "
                                f"support: {', '.join(bad)}")
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
        if adj.HasField("linux"):
            lin = adj.linux
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

    @property
    def empty(self) -> bool:
        return not self.owners

    def apply(self, spec: dict[str, Any], annotations: dict[str, str]
              ) -> container_spec.ContainerSpec:
        """spec (the JSON form, changed in place) adjusted and parsed again, which validates
        it; annotations (the record's) changed in place."""
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
        return container_spec.ContainerSpec.from_json(spec)


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
