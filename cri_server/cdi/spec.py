"""A CDI spec document -> a validated Spec (the CDI spec's rules, versions 0.3.0 to 1.1.0).

Unknown fields are errors, as in the reference implementation; so is a `cdiVersion` lower than
what the fields used need (e.g. `additionalGids` needs 0.7.0). Every edit is normalized to one
shape (missing optional fields filled with None/[]), so the injector needs no further checks.
Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cri_server.cdi import names
from pycri_common.errors import InvalidArgument
from pycri_common.text import shorten

#: Every cdiVersion the spec defines from 0.3.0 on, oldest first.
VERSIONS: tuple[str, ...] = ("0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
                             "1.1.0")
CURRENT_VERSION = VERSIONS[-1]
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
NODE_TYPES = ("", "b", "c", "u", "p")
MAX_DEVICES = 4096
MAX_LIST = 4096
MAX_STRING = 64 * 1024
_UINT32 = 2**32 - 1


@dataclass(frozen=True)
class Device:
    name: str
    annotations: dict[str, str]
    edits: dict[str, Any]


@dataclass
class Spec:
    version: str
    kind: str
    vendor: str
    cls: str
    annotations: dict[str, str]
    devices: dict[str, Device]
    edits: dict[str, Any]
    path: str = ""
    priority: int = 0  # index of its spec directory: higher wins on a name clash
    minimum_version: str = field(default="0.3.0")


def version_index(version: str) -> int:
    return VERSIONS.index(version)


class _Checker:
    """Validation with the path of the field at fault in every message."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.needs = "0.3.0"  # the minimum cdiVersion the fields used require

    def fail(self, where: str, msg: str) -> InvalidArgument:
        return InvalidArgument(f"{self.what}: {where}: {msg}")

    def need_version(self, version: str) -> None:
        if version_index(version) > version_index(self.needs):
            self.needs = version

    def obj(self, value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"must be an object, got {type(value).__name__}")
        for key in value:
            if key not in allowed:
                raise self.fail(where, f"unknown field {shorten(str(key))} (known: "
                                       f"{', '.join(allowed)})")
        return value

    def string(self, value: Any, where: str, required: bool = False) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string, got {type(value).__name__}")
        if len(value) > MAX_STRING or "\0" in value:
            raise self.fail(where, "is too long or holds a NUL byte")
        if required and not value:
            raise self.fail(where, "is required")
        return value

    def strings(self, value: Any, where: str) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise self.fail(where, f"must be a list of at most {MAX_LIST} strings")
        return [self.string(v, f"{where}[{i}]", required=False) for i, v in enumerate(value)]

    def integer(self, value: Any, where: str, lo: int, hi: int) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(where, f"must be an integer from {lo} to {hi}, got "
                                   f"{shorten(repr(value))}")
        return value

    def annotations(self, value: Any, where: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict) or len(value) > MAX_LIST:
            raise self.fail(where, "must be an object of strings")
        out = {}
        for k, v in value.items():
            out[self.string(k, f"{where} key", True)] = self.string(v, f"{where}[{k!r}]")
        if out:
            self.need_version("0.6.0")
        return out

    def env(self, value: Any, where: str) -> list[str]:
        out = self.strings(value, where)
        for i, kv in enumerate(out):
            if kv.find("=") <= 0:
                raise self.fail(f"{where}[{i}]", f"{shorten(kv)} is not NAME=VALUE")
        return out

    def abs_path(self, value: Any, where: str) -> str:
        path = self.string(value, where, required=True)
        if not path.startswith("/"):
            raise self.fail(where, f"{shorten(path)} must be an absolute path")
        return path

    # -- containerEdits ---------------------------------------------------------------
    def edits(self, value: Any, where: str) -> dict[str, Any]:
        e = self.obj({} if value is None else value, where,
                     ("env", "deviceNodes", "mounts", "hooks", "additionalGids", "intelRdt",
                      "netDevices"))
        out: dict[str, Any] = {
            "env": self.env(e.get("env"), f"{where}.env"),
            "deviceNodes": [self.device_node(d, f"{where}.deviceNodes[{i}]")
                            for i, d in enumerate(self.items(e.get("deviceNodes"),
                                                             f"{where}.deviceNodes"))],
            "mounts": [self.mount(m, f"{where}.mounts[{i}]")
                       for i, m in enumerate(self.items(e.get("mounts"), f"{where}.mounts"))],
            "hooks": [self.hook(h, f"{where}.hooks[{i}]")
                      for i, h in enumerate(self.items(e.get("hooks"), f"{where}.hooks"))],
            "additionalGids": [],
            "intelRdt": None,
            "netDevices": [self.net_device(n, f"{where}.netDevices[{i}]")
                           for i, n in enumerate(self.items(e.get("netDevices"),
                                                            f"{where}.netDevices"))],
        }
        for i, g in enumerate(self.items(e.get("additionalGids"), f"{where}.additionalGids")):
            out["additionalGids"].append(self.integer(g, f"{where}.additionalGids[{i}]", 0,
                                                      _UINT32))
        if out["additionalGids"]:
            self.need_version("0.7.0")
        if e.get("intelRdt") is not None:
            out["intelRdt"] = self.intel_rdt(e["intelRdt"], f"{where}.intelRdt")
        if out["netDevices"]:
            self.need_version("1.1.0")
            for key in ("hostInterfaceName", "name"):
                seen = [n[key] for n in out["netDevices"]]
                if len(set(seen)) != len(seen):
                    raise self.fail(f"{where}.netDevices", f"a {key} is listed twice")
        return out

    def items(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise self.fail(where, f"must be a list of at most {MAX_LIST} entries")
        return value

    def device_node(self, value: Any, where: str) -> dict[str, Any]:
        d = self.obj(value, where, ("path", "hostPath", "type", "major", "minor", "fileMode",
                                    "permissions", "uid", "gid"))
        node: dict[str, Any] = {
            "path": self.abs_path(d.get("path"), f"{where}.path"),
            "hostPath": self.string(d.get("hostPath"), f"{where}.hostPath"),
            "type": self.string(d.get("type"), f"{where}.type"),
            "major": self.integer(d.get("major"), f"{where}.major", 0, _UINT32),
            "minor": self.integer(d.get("minor"), f"{where}.minor", 0, _UINT32),
            "fileMode": self.integer(d.get("fileMode"), f"{where}.fileMode", 0, 0o7777),
            "permissions": self.string(d.get("permissions"), f"{where}.permissions"),
            "uid": self.integer(d.get("uid"), f"{where}.uid", 0, _UINT32),
            "gid": self.integer(d.get("gid"), f"{where}.gid", 0, _UINT32),
        }
        if node["hostPath"]:
            self.need_version("0.5.0")
            if not node["hostPath"].startswith("/"):
                raise self.fail(f"{where}.hostPath", "must be an absolute path")
        if node["type"] not in NODE_TYPES:
            raise self.fail(f"{where}.type", f"{shorten(node['type'])} is not one of b, c, "
                                             "u, p")
        perms = node["permissions"]
        if perms not in ("", "none") and (not set(perms) <= set("rwm")):
            raise self.fail(f"{where}.permissions", f"{shorten(perms)} is not letters of "
                                                    "'rwm' or 'none'")
        return node

    def mount(self, value: Any, where: str) -> dict[str, Any]:
        m = self.obj(value, where, ("hostPath", "containerPath", "type", "options"))
        out = {"hostPath": self.string(m.get("hostPath"), f"{where}.hostPath", True),
               "containerPath": self.abs_path(m.get("containerPath"), f"{where}.containerPath"),
               "type": self.string(m.get("type"), f"{where}.type"),
               "options": self.strings(m.get("options"), f"{where}.options")}
        if out["type"]:
            self.need_version("0.4.0")
        return out

    def hook(self, value: Any, where: str) -> dict[str, Any]:
        h = self.obj(value, where, ("hookName", "path", "args", "env", "timeout"))
        name = self.string(h.get("hookName"), f"{where}.hookName", True)
        if name not in HOOK_NAMES:
            raise self.fail(f"{where}.hookName", f"{shorten(name)} is not one of "
                                                 f"{', '.join(HOOK_NAMES)}")
        timeout = self.integer(h.get("timeout"), f"{where}.timeout", 1, 24 * 3600)
        return {"hookName": name, "path": self.abs_path(h.get("path"), f"{where}.path"),
                "args": self.strings(h.get("args"), f"{where}.args"),
                "env": self.env(h.get("env"), f"{where}.env"), "timeout": timeout}

    def intel_rdt(self, value: Any, where: str) -> dict[str, Any]:
        allowed = ("closID", "l3CacheSchema", "memBwSchema", "schemata", "enableMonitoring",
                   "enableCMT", "enableMBM")
        r = self.obj(value, where, allowed)
        self.need_version("0.7.0")
        out = {"closID": self.string(r.get("closID"), f"{where}.closID"),
               "l3CacheSchema": self.string(r.get("l3CacheSchema"), f"{where}.l3CacheSchema"),
               "memBwSchema": self.string(r.get("memBwSchema"), f"{where}.memBwSchema"),
               "schemata": self.strings(r.get("schemata"), f"{where}.schemata"),
               "enableMonitoring": r.get("enableMonitoring", False)}
        if not isinstance(out["enableMonitoring"], bool):
            raise self.fail(f"{where}.enableMonitoring", "must be true or false")
        if out["schemata"] or out["enableMonitoring"]:
            self.need_version("1.1.0")
        clos = out["closID"]
        if clos in (".", "..") or "/" in clos or "\n" in clos:
            raise self.fail(f"{where}.closID", f"{shorten(clos)} is not a resctrl group name")
        for key in ("enableCMT", "enableMBM"):  # 0.7.0 to 1.0.0 only
            if key in r:
                out["_removed_" + key] = r[key]
        return out

    def net_device(self, value: Any, where: str) -> dict[str, Any]:
        n = self.obj(value, where, ("hostInterfaceName", "name"))
        return {"hostInterfaceName": self.string(n.get("hostInterfaceName"),
                                                 f"{where}.hostInterfaceName", True),
                "name": self.string(n.get("name"), f"{where}.name", True)}


def _parse_version(value: Any, check: _Checker) -> str:
    if not isinstance(value, str) or not value:
        raise check.fail("cdiVersion", "is required (a string such as \"0.6.0\")")
    version = value[1:] if value.startswith("v") else value
    if version not in VERSIONS:
        raise check.fail("cdiVersion", f"{shorten(value)} is not a CDI version this runtime "
                                       f"reads ({', '.join(VERSIONS)})")
    return version


def is_empty(edits: dict[str, Any]) -> bool:
    return not any(edits[k] for k in ("env", "deviceNodes", "mounts", "hooks",
                                      "additionalGids", "intelRdt", "netDevices"))


def parse_spec(doc: Any, what: str) -> Spec:
    """The Spec of a parsed document named `what` (its path); InvalidArgument naming the field
    at fault."""
    check = _Checker(what)
    d = check.obj(doc, "spec", ("cdiVersion", "kind", "annotations", "devices",
                                "containerEdits"))
    version = _parse_version(d.get("cdiVersion"), check)
    kind = check.string(d.get("kind"), "kind", True)
    split = names.split_kind(kind)
    if split is None:
        raise check.fail("kind", f"{shorten(kind)} is not vendor.com/class")
    err = (names.vendor_or_class_error(split[0], "vendor")
           or names.vendor_or_class_error(split[1], "class"))
    if err:
        raise check.fail("kind", err)
    if "." in split[1]:
        check.need_version("0.6.0")
    annotations = check.annotations(d.get("annotations"), "annotations")
    raw_devices = check.items(d.get("devices"), "devices")
    if not raw_devices:
        raise check.fail("devices", "at least one device is required")
    if len(raw_devices) > MAX_DEVICES:
        raise check.fail("devices", f"more than {MAX_DEVICES} devices")
    devices: dict[str, Device] = {}
    for i, raw in enumerate(raw_devices):
        where = f"devices[{i}]"
        dev = check.obj(raw, where, ("name", "annotations", "containerEdits"))
        name = check.string(dev.get("name"), f"{where}.name", True)
        err = names.device_name_error(name)
        if err:
            raise check.fail(f"{where}.name", err)
        if name[0].isdigit():
            check.need_version("0.5.0")
        if name in devices:
            raise check.fail(f"{where}.name", f"device {name!r} is defined twice")
        edits = check.edits(dev.get("containerEdits"), f"{where}.containerEdits")
        if is_empty(edits):
            raise check.fail(f"{where}.containerEdits", "a device needs at least one edit")
        devices[name] = Device(name, check.annotations(dev.get("annotations"),
                                                       f"{where}.annotations"), edits)
    edits = check.edits(d.get("containerEdits"), "containerEdits")
    if version_index(check.needs) > version_index(version):
        raise check.fail("cdiVersion", f"{version} is too low for the fields used: they need at "
                                       f"least {check.needs}")
    for e in [edits, *(dev.edits for dev in devices.values())]:
        rdt = e["intelRdt"]
        if rdt is not None and any(k.startswith("_removed_") for k in rdt):
            if version_index(version) >= version_index("1.1.0"):
                raise check.fail("intelRdt", "enableCMT and enableMBM were removed in 1.1.0 "
                                             "(use enableMonitoring)")
            for k in [k for k in rdt if k.startswith("_removed_")]:
                del rdt[k]
    return Spec(version=version, kind=kind, vendor=split[0], cls=split[1],
                annotations=annotations, devices=devices, edits=edits, path=what,
                minimum_version=check.needs)
