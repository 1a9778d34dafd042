"""Network readiness for the CRI Status RPC (the NetworkReady condition).

Ready when a usable network config exists (first valid file in the conf dir, or the shipped
default when the dir has no config files) and every plugin it names, its IPAM plugin and the
loopback plugin are found in the bin dirs and support the list's cniVersion (VERSION probe,
cached per binary path/mtime/size so repeated Status calls cost no exec).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import NamedTuple

from cni.config import NetworkConfigList, choose_network
from cni.errors import CniError
from cni.invoke import find_plugin, plugin_versions

REASON_NOT_READY = "NetworkPluginNotReady"

_version_cache: dict[tuple[str, int, int], list[str]] = {}
_version_lock = threading.Lock()


class NetworkStatus(NamedTuple):
    ready: bool
    reason: str
    message: str


def _cached_versions(path: str) -> list[str]:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    with _version_lock:
        if key in _version_cache:
            return _version_cache[key]
    versions = plugin_versions(path)
    with _version_lock:
        _version_cache[key] = versions
    return versions


def required_plugin_types(network: NetworkConfigList) -> list[str]:
    """Plugin binaries a list needs: each plugin's type and its IPAM type, in order."""
    types: list[str] = []
    for plugin in network.plugins:
        for t in (plugin.get("type"), (plugin.get("ipam") or {}).get("type")):
            if isinstance(t, str) and t and t not in types:
                types.append(t)
    return types


def network_status(
    conf_dir: str,
    bin_dirs: Sequence[str],
    default: NetworkConfigList | None = None,
    probe_versions: bool = True,
    need_loopback: bool = True,
) -> NetworkStatus:
    """(ready, reason, message) for the NetworkReady condition; never raises for bad config."""
    try:
        network = choose_network(conf_dir, default)
    except CniError as exc:
        return NetworkStatus(False, REASON_NOT_READY, str(exc))
    types = required_plugin_types(network) + (["loopback"] if need_loopback else [])
    for plugin_type in dict.fromkeys(types):
        path = find_plugin(plugin_type, bin_dirs)
        if path is None:
            return NetworkStatus(
                False,
                REASON_NOT_READY,
                f"CNI plugin {plugin_type!r} needed by network {network.name!r} "
                f"({network.source}) not found in {', '.join(bin_dirs) or '(no bin dirs)'}",
            )
        if not probe_versions:
            continue
        try:
            versions = _cached_versions(path)
        except (CniError, OSError) as exc:
            return NetworkStatus(
                False, REASON_NOT_READY, f"CNI plugin {path} does not answer VERSION: {exc}"
            )
        wanted = "1.0.0" if plugin_type == "loopback" else network.cni_version
        if wanted not in versions:
            return NetworkStatus(
                False,
                REASON_NOT_READY,
                f"CNI plugin {path} does not support cniVersion {wanted} of network "
                f"{network.name!r} ({network.source}); it supports {', '.join(versions)}",
            )
    return NetworkStatus(True, "", f"CNI network {network.name!r} from {network.source}")
