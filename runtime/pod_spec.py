"""PodSpec: what the daemon asks the zygote to start a pod shim for (contract 2 of
docs/architecture.md), a frozen dataclass with one parse and one serialisation.

The daemon builds it from its sandbox record (cri_server.sandboxes.manager) and sends
``spec.to_json()`` in the zygote's "spawn_shim" request; the zygote parses it with
``PodSpec.from_json`` (the validation: InvalidArgument("pod spec: <field>: ...")) before it
forks, and the shim it forks gets the parsed object. Standard library only.

JSON form::

    {"pod_id": str, "hostname": str,
     "namespaces": {"network": "pod"|"node", "ipc": "pod"|"node",
                    "pid": "pod"|"container"|"node"},
     "sysctls": {name: value},
     "shim_dir": abs dir (control socket, shim.pid, shim.log, status files),
     "ns_dir": abs dir (pinned namespaces), "netns_path": str (the daemon's pinned netns, or ""),
     "cgroup": {"driver": "cgroupfs"|"systemd", "parent": str, "path": str} | null,
     "log_level": str,
     "userns": null | {"uid_map": [[container_id, host_id, length]], "gid_map": [...]}}
         # a pod user namespace: the shim makes it (and the network namespace, pinned at
         # netns_path, then) before the pause-holder
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from pycri_common.errors import InvalidArgument

#: the longest unix socket path (sun_path, without its NUL)
_MAX_SOCKET_PATH = 107
#: namespace -> (default mode, allowed modes)
_MODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "network": ("pod", ("pod", "node")), "ipc": ("pod", ("pod", "node")),
    "pid": ("container", ("pod", "container", "node"))}


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise InvalidArgument(f"pod spec: {where}: {msg}")


def _str(value: Any, where: str) -> str:
    _need(isinstance(value, str), where, f"must be a string, got {value!r}")
    return str(value)


@dataclass(frozen=True, slots=True)
class PodNamespaces:
    """Which namespaces the pod has of its own ("pod"), shares with the host ("node"), or
    (pid) leaves to each container ("container")."""

    network: str = "pod"
    ipc: str = "pod"
    pid: str = "container"

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        ns = obj or {}
        _need(isinstance(ns, dict), "namespaces", "must be an object")
        modes: dict[str, str] = {}
        for name, (default, allowed) in _MODES.items():
            value = ns.get(name, default)
            _need(value in allowed, f"namespaces.{name}",
                  f"must be one of {', '.join(allowed)}, not {value!r}")
            modes[name] = value
        return cls(**modes)

    def to_json(self) -> dict[str, str]:
        return {"network": self.network, "ipc": self.ipc, "pid": self.pid}

    def pause_types(self) -> list[str]:
        """The /proc ns names the pause-holder creates (and the shim pins), in order."""
        types: list[str] = []
        if self.network == "pod":
            types.append("net")
        if self.ipc == "pod":
            types.append("ipc")
        if self.network != "node":
            types.append("uts")
        if self.pid == "pod":
            types.append("pid")
        return types


IdRange = tuple[int, int, int]  # (container_id, host_id, length)


@dataclass(frozen=True, slots=True)
class IdMaps:
    """The uid and gid maps of a pod user namespace (what /proc/<pid>/uid_map holds)."""

    uid_map: tuple[IdRange, ...]
    gid_map: tuple[IdRange, ...]

    @classmethod
    def parse(cls, obj: Any, need: Callable[[bool, str, str], None], where: str) -> Self:
        """{"uid_map": [[c, h, n]], "gid_map": [...]}: non-empty, lengths > 0, container ID 0
        mapped; `need(cond, field, message)` raises the caller's error."""
        need(isinstance(obj, dict), where, "must be an object with uid_map and gid_map")
        maps: dict[str, tuple[IdRange, ...]] = {}
        for key in ("uid_map", "gid_map"):
            m = obj.get(key)
            need(isinstance(m, list) and len(m) > 0 and all(
                isinstance(e, list | tuple) and len(e) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in e)
                and e[2] > 0 for e in m), f"{where}.{key}",
                f"must be a non-empty list of [container_id, host_id, length] with length > 0, "
                f"got {m!r}")
            ranges = tuple((int(c), int(h), int(n)) for c, h, n in m)
            need(any(c == 0 for c, _, _ in ranges), f"{where}.{key}", "must map container ID 0")
            maps[key] = ranges
        return cls(uid_map=maps["uid_map"], gid_map=maps["gid_map"])

    def to_json(self) -> dict[str, list[list[int]]]:
        return {"uid_map": [list(r) for r in self.uid_map],
                "gid_map": [list(r) for r in self.gid_map]}


@dataclass(frozen=True, slots=True)
class PodCgroup:
    driver: str = "cgroupfs"  # "cgroupfs" | "systemd"
    parent: str = ""
    path: str = ""            # the pod's cgroup ("" = none)

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        _need(isinstance(obj, dict), "cgroup", "must be an object or null")
        driver = obj.get("driver") or "cgroupfs"
        _need(driver in ("cgroupfs", "systemd"), "cgroup.driver",
              f"must be cgroupfs or systemd, got {driver!r}")
        return cls(driver=driver, parent=_str(obj.get("parent") or "", "cgroup.parent"),
                   path=_str(obj.get("path") or "", "cgroup.path"))

    def to_json(self) -> dict[str, str]:
        return {"driver": self.driver, "parent": self.parent, "path": self.path}


@dataclass(frozen=True, slots=True)
class PodSpec:
    pod_id: str
    shim_dir: str
    ns_dir: str
    hostname: str = ""
    namespaces: PodNamespaces = field(default_factory=PodNamespaces)
    sysctls: dict[str, str] = field(default_factory=dict)
    netns_path: str = ""
    cgroup: PodCgroup | None = None
    log_level: str = "info"
    userns: IdMaps | None = None  # a user namespace of the pod's own; None: the host's

    @classmethod
    def from_json(cls, obj: Any) -> Self:
        """Parse (and so validate) a PodSpec; raises InvalidArgument naming the field."""
        _need(isinstance(obj, dict), "spec", "must be a JSON object")
        p: dict[str, Any] = obj
        dirs: dict[str, str] = {}
        for key in ("pod_id", "shim_dir", "ns_dir"):
            value = p.get(key)
            _need(isinstance(value, str) and value != "", key,
                  f"must be a non-empty string, got {value!r}")
            dirs[key] = str(value)
        for key in ("shim_dir", "ns_dir"):
            _need(os.path.isabs(dirs[key]), key, f"must be an absolute path, got {dirs[key]!r}")
        _need("/" not in dirs["pod_id"], "pod_id", f"must not contain '/': {dirs['pod_id']!r}")
        sock = os.path.join(dirs["shim_dir"], "shim.sock")
        _need(len(sock.encode()) <= _MAX_SOCKET_PATH, "shim_dir",
              f"control socket path {sock!r} is longer than {_MAX_SOCKET_PATH} bytes")
        sysctls = p.get("sysctls") or {}
        _need(isinstance(sysctls, dict), "sysctls", "must be an object of name -> value")
        for name, value in sysctls.items():
            _need(isinstance(name, str) and isinstance(value, str), f"sysctls[{name!r}]",
                  f"names and values must be strings, got {value!r}")
        cg = p.get("cgroup")
        u = p.get("userns")
        userns = None if u is None else IdMaps.parse(u, _need, "userns")
        netns_path = _str(p.get("netns_path") or "", "netns_path")
        _need(userns is None or netns_path == "" or os.path.isabs(netns_path), "netns_path",
              f"must be an absolute path, got {netns_path!r}")
        return cls(pod_id=dirs["pod_id"], shim_dir=dirs["shim_dir"], ns_dir=dirs["ns_dir"],
                   hostname=_str(p.get("hostname") or "", "hostname"),
                   namespaces=PodNamespaces.from_json(p.get("namespaces")),
                   sysctls=dict(sysctls), netns_path=netns_path,
                   cgroup=None if cg is None else PodCgroup.from_json(cg),
                   log_level=_str(p.get("log_level") or "info", "log_level"), userns=userns)

    def to_json(self) -> dict[str, Any]:
        return {"pod_id": self.pod_id, "hostname": self.hostname,
                "namespaces": self.namespaces.to_json(), "sysctls": dict(self.sysctls),
                "shim_dir": self.shim_dir, "ns_dir": self.ns_dir, "netns_path": self.netns_path,
                "cgroup": None if self.cgroup is None else self.cgroup.to_json(),
                "log_level": self.log_level,
                # only when set: a pod without a user namespace keeps its old JSON
                **({} if self.userns is None else {"userns": self.userns.to_json()})}

    @property
    def socket_path(self) -> str:
        """The shim's control socket."""
        return os.path.join(self.shim_dir, "shim.sock")
