"""Resolved CDI devices + a ContainerSpec dict -> the spec with their containerEdits applied.

Order (the CDI spec's): for each requested device, the spec-level edits of its spec file (once
per file, when its first device comes), then the device's own edits. Edits map onto the
ContainerSpec's existing fields:

- env            -> process.env (a name already set is replaced)
- deviceNodes    -> devices, with type/major/minor/file_mode/uid/gid filled from the host node
                    when omitted (a fully given node needs no host node); a node at the same
                    container path is replaced; permissions '' -> rwm, 'none' -> no cgroup rule
- mounts         -> mounts (bind unless a filesystem type is given), then ordered parents first
- hooks          -> hooks[<hook name>] (prestart runs as createRuntime)
- additionalGids -> process.user.supplemental_groups (0 ignored)
- intelRdt       -> intel_rdt (runtime.resctrl): the CLOS group closID, or one named after the
                    container (removed with it); l3CacheSchema, memBwSchema and schemata lines;
                    refused when the host has no resctrl. netDevices -> refused (not supported)

Two devices whose edits disagree (one env name with two values, one container path with two
device nodes or two mounts, two intelRdt settings) fail with InvalidArgument naming both.
Reads the host only to stat device nodes and mount sources.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cri_server.cdi.registry import Resolved
from pycri_common.errors import FailedPrecondition, InvalidArgument, NotFound
from pycri_common.text import shorten

RESCTRL = "/sys/fs/resctrl"
DEFAULT_FILE_MODE = 0o666
_TYPES = {stat.S_IFCHR: "c", stat.S_IFBLK: "b", stat.S_IFIFO: "p"}
_BIND_TYPES = ("", "none", "bind", "rbind")


@dataclass(frozen=True)
class Owner:
    """Whose edits these are: a device, or the spec-level edits of a spec file."""
    label: str
    spec_path: str
    spec_level: bool

    def may_override(self, other: Owner) -> bool:
        """A device's edits refine its own file's spec-level edits (applied after them);
        two devices, or two files, must agree."""
        return self == other or (self.spec_path == other.spec_path
                                 and (self.spec_level or other.spec_level))


def ordered_edits(devices: list[Resolved]) -> list[tuple[Owner, dict[str, Any]]]:
    """(owner, edits) in application order."""
    out: list[tuple[Owner, dict[str, Any]]] = []
    seen_specs: set[int] = set()
    for r in devices:
        if id(r.spec) not in seen_specs:
            seen_specs.add(id(r.spec))
            out.append((Owner(f"CDI spec {r.spec.kind} ({r.spec.path})", r.spec.path, True),
                        r.spec.edits))
        out.append((Owner(f"CDI device {r.name}", r.spec.path, False), r.device.edits))
    return out


class _Claims:
    """Which owner set what (env name, container path, intelRdt), to report conflicts."""

    def __init__(self) -> None:
        self._by: dict[tuple[str, str], tuple[Owner, Any]] = {}

    def claim(self, what: str, key: str, value: Any, owner: Owner) -> None:
        prev = self._by.get((what, key))
        if prev is not None and not prev[0].may_override(owner) and prev[1] != value:
            raise InvalidArgument(f"conflicting CDI edits: {prev[0].label} and {owner.label} "
                                  f"both set {what} {shorten(key)} differently")
        self._by[(what, key)] = (owner, value)


def host_node(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def device_entry(node: dict[str, Any], owner: Owner | str, user: dict[str, Any],
                 lookup: Callable[[str], os.stat_result | None] = host_node) -> dict[str, Any]:
    """A CDI deviceNode as a ContainerSpec device, host info filled in."""
    owner = owner.label if isinstance(owner, Owner) else owner
    host_path = node["hostPath"] or node["path"]
    ntype = "c" if node["type"] == "u" else node["type"]
    major, minor, mode = node["major"], node["minor"], node["fileMode"]
    minimal = bool(ntype) and (bool(major) or ntype == "p")
    st = lookup(host_path)
    if st is None or stat.S_IFMT(st.st_mode) not in _TYPES:
        if not minimal:
            why = "does not exist" if st is None else "is not a device node"
            raise NotFound(f"{owner}: host device {shorten(host_path)} {why} (and the spec "
                           "does not give its type and major number)")
    else:
        if mode is None:
            mode = stat.S_IMODE(st.st_mode)
        if not minimal:
            host_type = _TYPES[stat.S_IFMT(st.st_mode)]
            if ntype and ntype != host_type:
                raise InvalidArgument(f"{owner}: device {shorten(node['path'])} is of type "
                                      f"{ntype} but the host node {shorten(host_path)} is "
                                      f"{host_type}")
            ntype = host_type
            if ntype != "p" and not major:
                major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    perms = node["permissions"]
    perms = "rwm" if perms == "" else "" if perms == "none" else perms
    uid, gid = node["uid"], node["gid"]
    if uid is None:
        uid = user.get("uid") if isinstance(user.get("uid"), int) and user["uid"] > 0 else 0
    if gid is None:
        gid = user.get("gid") if isinstance(user.get("gid"), int) and user["gid"] > 0 else 0
    return {"host_path": host_path, "container_path": node["path"], "permissions": perms,
            "type": ntype, "major": int(major or 0), "minor": int(minor or 0),
            "file_mode": DEFAULT_FILE_MODE if mode is None else int(mode),
            "uid": int(uid), "gid": int(gid)}


def mount_entry(m: dict[str, Any], owner: Owner | str) -> dict[str, Any]:
    owner = owner.label if isinstance(owner, Owner) else owner
    options = list(m["options"])
    mtype = m["type"]
    is_bind = mtype in _BIND_TYPES or "bind" in options or "rbind" in options
    source = m["hostPath"]
    if is_bind:
        if not source.startswith("/"):
            raise InvalidArgument(f"{owner}: mount source {shorten(source)} must be absolute")
        if not os.path.exists(source):
            raise NotFound(f"{owner}: mount source {shorten(source)} does not exist on the "
                           "host")
        options = [o for o in options if o not in ("bind", "rbind")] + ["rbind"]
    return {"destination": m["containerPath"], "type": "bind" if is_bind else mtype,
            "source": source, "options": options, "propagation": None,
            "readonly": "ro" in options, "recursive_readonly": False}


def rdt_entry(rdt: dict[str, Any], container_id: str, root: str) -> dict[str, Any]:
    lines = [x for x in (rdt["l3CacheSchema"], rdt["memBwSchema"]) if x]
    lines += [x for x in rdt["schemata"] if x]
    clos = rdt["closID"]
    return {"root": root, "clos_id": clos or container_id, "schemata": lines,
            "monitoring": rdt["enableMonitoring"], "owned": not clos}


def _depth(path: str) -> int:
    return len([p for p in os.path.normpath(path).split("/") if p])


def apply(spec: dict[str, Any], devices: list[Resolved],
          resctrl: str = RESCTRL) -> dict[str, Any]:
    """Applies the edits of `devices` to `spec` (a ContainerSpec dict) in place; returns it."""
    if not devices:
        return spec
    claims = _Claims()
    process = spec["process"]
    user = process.setdefault("user", {})
    env: list[str] = process.setdefault("env", [])
    spec_devices: list[dict[str, Any]] = spec.setdefault("devices", [])
    spec_mounts: list[dict[str, Any]] = spec.setdefault("mounts", [])
    hooks: dict[str, list[dict[str, Any]]] = spec.setdefault("hooks", {})
    groups: list[int] = user.setdefault("supplemental_groups", [])
    added_mounts = False
    for owner, edits in ordered_edits(devices):
        for kv in edits["env"]:
            name, _, value = kv.partition("=")
            claims.claim("env", name, value, owner)
            env[:] = [e for e in env if e.partition("=")[0] != name] + [kv]
        for node in edits["deviceNodes"]:
            dev = device_entry(node, owner, user)
            claims.claim("device node", dev["container_path"],
                         (dev["type"], dev["major"], dev["minor"], dev["host_path"]), owner)
            spec_devices[:] = [d for d in spec_devices
                               if d.get("container_path") != dev["container_path"]] + [dev]
        for m in edits["mounts"]:
            entry = mount_entry(m, owner)
            claims.claim("mount", entry["destination"],
                         (entry["type"], entry["source"], tuple(entry["options"])), owner)
            spec_mounts[:] = [x for x in spec_mounts
                              if x.get("destination") != entry["destination"]] + [entry]
            added_mounts = True
        for h in edits["hooks"]:
            kind = "createRuntime" if h["hookName"] == "prestart" else h["hookName"]
            hooks.setdefault(kind, []).append({"path": h["path"],
                                               "args": list(h["args"]) or [h["path"]],
                                               "env": list(h["env"]), "timeout": h["timeout"]})
        for gid in edits["additionalGids"]:
            if gid and gid not in groups:
                groups.append(gid)
        if edits["intelRdt"] is not None:
            claims.claim("intelRdt", "", repr(sorted(edits["intelRdt"].items())), owner)
            if not os.path.isdir(os.path.join(resctrl, "info")):
                raise FailedPrecondition(f"{owner.label}: intelRdt needs the resctrl filesystem "
                                         f"mounted at {resctrl}, which this host does not have")
            spec["intel_rdt"] = rdt_entry(edits["intelRdt"], spec["id"], resctrl)
        if edits["netDevices"]:
            raise FailedPrecondition(f"{owner.label}: netDevices (moving host network interfaces into "
                                     "the container) are not supported by pycri")
    if added_mounts:
        spec_mounts.sort(key=lambda x: _depth(x["destination"]))  # stable: parents first
    spec.setdefault("cdi_devices", [])
    spec["cdi_devices"] = [*spec["cdi_devices"], *(r.name for r in devices)]
    return spec
