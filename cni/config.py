"""Network configuration: loading a conf dir, validation, and the default conflist.

Semantics follow libcni/containerd: files in the conf dir (not recursive) whose names end in
``.conflist``, ``.conf`` or ``.json`` are considered in file-name order and the first valid one
is used. A ``.conflist`` holds a network configuration list; a ``.conf``/``.json`` holds one
plugin configuration that is wrapped into a one-plugin list (name and cniVersion taken from it).
Unlike containerd (which fails on the first bad file) an invalid file is skipped with its reason
recorded, as CRI-O does; if the dir has config files but none is valid, there is no network
(the shipped default is used only when the dir has no config files at all).
"""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from cni.errors import CniConfigError
from pycri_common import errors
from pycri_common.bounded_json import load_json
from pycri_common.outside_files import read_regular_file

CONF_EXTENSIONS = (".conflist", ".conf", ".json")
DEFAULT_NETWORK_NAME = "pycri"
DEFAULT_BRIDGE = "pycri0"
DEFAULT_SUBNET = "10.88.0.0/16"
DEFAULT_CONFLIST_RESOURCE = "pycri.conflist"

# CNI spec versions this client speaks (results of all of them are parsed).
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PLUGIN_TYPE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


MAX_CONFIG_FILE_BYTES = 1024 * 1024


class InvalidConfig(errors.InvalidArgument):
    """A network configuration document is malformed (message names the file and field)."""


def version_tuple(version: str) -> tuple[int, int, int]:
    """'1.0.0' -> (1, 0, 0); raises ValueError for anything else."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"not a semantic version: {version!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True)
class NetworkConfigList:
    """A validated network configuration list (spec section "Configuration format")."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    raw: dict[str, Any]
    source: str  # file path, or "<default>"
    disable_check: bool = False

    def plugin_types(self) -> list[str]:
        return [p["type"] for p in self.plugins]

    def supports_check(self) -> bool:
        return version_tuple(self.cni_version) >= (0, 4, 0) and not self.disable_check


@dataclass
class ConfDirScan:
    """What was found in a conf dir: the chosen list (or None) and why files were skipped."""

    chosen: NetworkConfigList | None
    config_files: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason


def _pick_version(raw: dict[str, Any], where: str) -> str:
    versions = raw.get("cniVersions")
    if versions is not None:
        # spec 1.1: the runtime picks the highest version it supports from cniVersions.
        if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
            raise InvalidConfig(f"{where}: 'cniVersions' must be a list of strings")
        usable = [v for v in versions if v in SUPPORTED_VERSIONS]
        if usable:
            return max(usable, key=version_tuple)
    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise InvalidConfig(f"{where}: 'cniVersion' is missing or not a string")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidConfig(
            f"{where}: cniVersion {version!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_VERSIONS)})"
        )
    return version


def _validate_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidConfig(
            f"{where}: network 'name' {name!r} must start with a letter or digit and contain "
            "only letters, digits, '_', '.' and '-'"
        )
    return name


def _validate_plugin(plugin: Any, where: str, index: int) -> dict[str, Any]:
    if not isinstance(plugin, dict):
        raise InvalidConfig(f"{where}: plugins[{index}] is not a JSON object")
    ptype = plugin.get("type")
    if not isinstance(ptype, str) or not _PLUGIN_TYPE_RE.match(ptype):
        raise InvalidConfig(
            f"{where}: plugins[{index}] has no valid 'type' (got {ptype!r}); it must name a "
            "plugin binary (letters, digits, '_', '.', '-')"
        )
    caps = plugin.get("capabilities", {})
    if not isinstance(caps, dict):
        raise InvalidConfig(f"{where}: plugins[{index}] 'capabilities' must be an object")
    return plugin


def parse_conflist(raw: Any, source: str) -> NetworkConfigList:
    """Validate a configuration-list document (already JSON-decoded)."""
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{source}: configuration list is not a JSON object")
    version = _pick_version(raw, source)
    name = _validate_name(raw.get("name"), source)
    plugins = raw.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise InvalidConfig(f"{source}: 'plugins' must be a non-empty list")
    checked = tuple(_validate_plugin(p, source, i) for i, p in enumerate(plugins))
    disable_check = raw.get("disableCheck", False)
    if isinstance(disable_check, str):  # libcni accepts "true"/"false" strings too
        disable_check = disable_check.lower() == "true"
    if not isinstance(disable_check, bool):
        raise InvalidConfig(f"{source}: 'disableCheck' must be a boolean")
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=checked,
        raw=raw,
        source=source,
        disable_check=disable_check,
    )


def parse_single_conf(raw: Any, source: str) -> NetworkConfigList:
    """Wrap a single-plugin configuration (.conf) into a one-plugin list, like libcni."""
    if not isinstance(raw, dict):
        raise InvalidConfig(f"{source}: configuration is not a JSON object")
    if "type" not in raw:
        hint = " (it has 'plugins': rename it to .conflist)" if "plugins" in raw else ""
        raise InvalidConfig(f"{source}: network 'type' not found{hint}")
    wrapped = {"cniVersion": raw.get("cniVersion"), "name": raw.get("name"), "plugins": [raw]}
    if "cniVersions" in raw:
        wrapped["cniVersions"] = raw["cniVersions"]
    return parse_conflist(wrapped, source)


def load_file(path: str) -> NetworkConfigList:
    """Load and validate one config file; raises InvalidConfig with the reason."""
    try:
        raw = load_json(read_regular_file(path, MAX_CONFIG_FILE_BYTES, "CNI config file"),
                        f"CNI config file {path}", MAX_CONFIG_FILE_BYTES)
    except errors.InvalidArgument as exc:
        raise InvalidConfig(str(exc)) from None
    if path.endswith(".conflist"):
        return parse_conflist(raw, path)
    return parse_single_conf(raw, path)


def config_files(conf_dir: str) -> list[str]:
    """Config files in conf_dir sorted by file name (missing dir = none)."""
    try:
        names = os.listdir(conf_dir)
    except FileNotFoundError:
        return []
    except NotADirectoryError as exc:
        raise CniConfigError(f"CNI conf dir {conf_dir} is not a directory") from exc
    files = []
    for name in sorted(names):
        if not name.endswith(CONF_EXTENSIONS) or name.startswith("."):
            continue
        path = os.path.join(conf_dir, name)
        if os.path.isfile(path):
            files.append(path)
    return files


def scan_conf_dir(conf_dir: str) -> ConfDirScan:
    """Find the first valid network config list in conf_dir (by file name)."""
    scan = ConfDirScan(chosen=None, config_files=config_files(conf_dir))
    for path in scan.config_files:
        try:
            scan.chosen = load_file(path)
            break
        except InvalidConfig as exc:
            scan.skipped[path] = str(exc)
    return scan


def default_conflist(
    subnet: str = DEFAULT_SUBNET,
    subnet_v6: str | None = None,
    bridge: str = DEFAULT_BRIDGE,
    ipam_data_dir: str | None = None,
    name: str = DEFAULT_NETWORK_NAME,
) -> NetworkConfigList:
    """The shipped default (bridge + host-local + portmap) with our subnet/bridge filled in.

    subnet/subnet_v6 are CIDRs (v6 optional, makes the pod dual-stack); ipam_data_dir is the
    host-local state dir (host-local's default /var/lib/cni/networks when None).
    """
    raw = json.loads(
        resources.files("cni").joinpath("data", DEFAULT_CONFLIST_RESOURCE).read_text("utf-8")
    )
    raw = copy.deepcopy(raw)
    raw["name"] = name
    bridge_plugin = raw["plugins"][0]
    if not bridge or len(bridge) > 15 or "/" in bridge or any(c.isspace() for c in bridge):
        raise errors.InvalidArgument(
            f"CNI bridge name {bridge!r} must be 1-15 characters without '/' or spaces"
        )
    bridge_plugin["bridge"] = bridge
    ipam = bridge_plugin["ipam"]
    ranges = [[{"subnet": _check_subnet(subnet, 4)}]]
    routes = [{"dst": "0.0.0.0/0"}]
    if subnet_v6:
        ranges.append([{"subnet": _check_subnet(subnet_v6, 6)}])
        routes.append({"dst": "::/0"})
    ipam["ranges"] = ranges
    ipam["routes"] = routes
    if ipam_data_dir:
        ipam["dataDir"] = ipam_data_dir
    return parse_conflist(raw, "<default>")


def _check_subnet(subnet: str, family: int) -> str:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise errors.InvalidArgument(f"CNI subnet {subnet!r} is not a valid CIDR: {exc}") from exc
    if net.version != family:
        raise errors.InvalidArgument(f"CNI subnet {subnet!r} is not an IPv{family} network")
    if net.num_addresses < 4:
        raise errors.InvalidArgument(f"CNI subnet {subnet!r} is too small for pods")
    return str(net)


def loopback_conflist() -> NetworkConfigList:
    """The list used to bring up 'lo' in every pod netns (as containerd does)."""
    raw = {"cniVersion": "1.0.0", "name": "pycri-loopback", "plugins": [{"type": "loopback"}]}
    return parse_conflist(raw, "<loopback>")


def choose_network(conf_dir: str, default: NetworkConfigList | None) -> NetworkConfigList:
    """The list to use: first valid file in conf_dir, else the default if the dir is empty."""
    scan = scan_conf_dir(conf_dir)
    if scan.chosen is not None:
        return scan.chosen
    if scan.config_files:
        reasons = "; ".join(scan.skipped.values())
        raise CniConfigError(f"no valid CNI network config in {conf_dir}: {reasons}")
    if default is None:
        raise CniConfigError(
            f"no CNI network config found in {conf_dir} (*.conflist, *.conf, *.json) and the "
            "default network is disabled"
        )
    return default
