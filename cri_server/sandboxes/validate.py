"""Checks a RunPodSandboxRequest before anything is created, and derives the plan from it.

Pure functions (no I/O): runtime handler, metadata, namespace modes, sysctls
(names and values; CVE-2022-0811), DNS config, port mappings.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cri_server import labels, resources
from proto import api_pb2
from pycri_common.errors import InvalidArgument, NotFound

_MODE_NAMES = {api_pb2.POD: "pod", api_pb2.CONTAINER: "container", api_pb2.NODE: "node",
               api_pb2.TARGET: "target"}
# A sysctl name: dotted or slashed path of [A-Za-z0-9_-] parts (interface names may carry dots
# in the slash form, e.g. net/ipv4/conf/eth0.100/forwarding).
_SYSCTL_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
_SYSCTL_SLASH_PART = re.compile(r"^[A-Za-z0-9_\-.]+$")
_SYSCTL_VALUE = re.compile(r"^[^\s+=]+(?:[ \t]+[^\s+=]+)*$")
_MAX_SYSCTL_VALUE = 4096
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-.]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class SandboxPlan:
    """What RunPodSandbox will build, derived from a validated request."""

    name_key: str
    runtime_handler: str
    namespaces: dict[str, str]  # network/ipc/pid -> "pod"|"node"|"container"
    hostname: str
    sysctls: dict[str, str] = field(default_factory=dict)
    port_mappings: list[dict[str, object]] = field(default_factory=list)
    userns: dict[str, Any] = field(default_factory=dict)  # user_namespace(): {} = the host's

    @property
    def host_network(self) -> bool:
        return self.namespaces["network"] == "node"


def name_key(meta: api_pb2.PodSandboxMetadata) -> str:
    """The reserved name of a pod: one live pod per namespace/name/uid/attempt."""
    return f"{meta.namespace}/{meta.name}/{meta.uid}/{meta.attempt}"


def check_runtime_handler(handler: str, known: list[str]) -> str:
    if handler and handler not in known:
        names = ", ".join(repr(h) for h in ["", *known])
        raise NotFound(f"runtime handler {handler!r} is not configured (known: {names}); "
                       "add it to runtime.handlers in the pycri config")
    return handler


def check_metadata(config: api_pb2.PodSandboxConfig) -> None:
    if not config.HasField("metadata"):
        raise InvalidArgument("PodSandboxConfig.metadata is required")
    meta = config.metadata
    for field_name in ("name", "namespace", "uid"):
        value = getattr(meta, field_name)
        if not value:
            raise InvalidArgument(f"PodSandboxConfig.metadata.{field_name} must not be empty")
        if any(c in value for c in "/;=") or any(c.isspace() or ord(c) < 32 for c in value):
            raise InvalidArgument(f"PodSandboxConfig.metadata.{field_name} {value!r} must not "
                                  "contain '/', ';', '=', whitespace or control characters")


def namespace_modes(config: api_pb2.PodSandboxConfig) -> dict[str, str]:
    opts = config.linux.security_context.namespace_options
    network = _MODE_NAMES.get(opts.network, "?")
    ipc = _MODE_NAMES.get(opts.ipc, "?")
    pid = _MODE_NAMES.get(opts.pid, "?")
    if network not in ("pod", "node"):
        raise InvalidArgument(f"network namespace mode {network.upper()} is not valid for a pod "
                              "(use POD or NODE)")
    if ipc not in ("pod", "node"):
        raise InvalidArgument(f"ipc namespace mode {ipc.upper()} is not valid for a pod "
                              "(use POD or NODE)")
    if pid not in ("pod", "container", "node"):
        raise InvalidArgument(f"pid namespace mode {pid.upper()} is not valid for a pod "
                              "(use POD, CONTAINER or NODE)")
    return {"network": network, "ipc": ipc, "pid": pid}


MAX_ID = (1 << 32) - 1   # (uid_t)-1 is no ID: a range must end below it


def _id_map(mappings: Sequence[api_pb2.IDMapping], what: str) -> list[list[int]]:
    """One CRI mapping list as [[container_id, host_id, length]]: exactly one range (kubelet
    sends one), container ID 0 mapped, non-empty, inside the 32-bit ID space."""
    if len(mappings) != 1:
        raise InvalidArgument(f"userns_options.{what}: a pod user namespace needs exactly one "
                              f"mapping, got {len(mappings)}")
    m = mappings[0]
    if m.length == 0:
        raise InvalidArgument(f"userns_options.{what}: the mapping's length must not be 0")
    if m.container_id != 0:
        raise InvalidArgument(f"userns_options.{what}: container ID 0 must be mapped (the "
                              f"mapping starts at container ID {m.container_id})")
    for name, start in (("container_id", m.container_id), ("host_id", m.host_id)):
        if start + m.length > MAX_ID:
            raise InvalidArgument(f"userns_options.{what}: {name} {start} + length {m.length} "
                                  f"goes past the last ID {MAX_ID - 1}")
    return [[m.container_id, m.host_id, m.length]]


def user_namespace(config: api_pb2.PodSandboxConfig, namespaces: dict[str, str]
                   ) -> dict[str, Any]:
    """{} for the host's user namespace (NODE, or no userns_options), else {"mode": "pod",
    "uids": [[0, host, n]], "gids": [[0, host, n]]}."""
    sc = config.linux.security_context
    opts = sc.namespace_options
    if not opts.HasField("userns_options"):
        return {}
    u = opts.userns_options
    mode = _MODE_NAMES.get(u.mode, "?")
    if mode == "node":
        if u.uids or u.gids:
            raise InvalidArgument("userns_options: mode NODE (the host's user namespace) takes "
                                  "no uid/gid mappings")
        return {}
    if mode != "pod":
        raise InvalidArgument(f"user namespace mode {mode.upper()} is not supported (use POD "
                              "or NODE)")
    if sc.privileged:
        raise InvalidArgument("a privileged pod cannot have its own user namespace "
                              "(userns_options mode POD)")
    for kind, value in (("network", "network"), ("ipc", "ipc"), ("pid", "pid")):
        if namespaces[kind] == "node":
            raise InvalidArgument(f"a pod with its own user namespace cannot use the host's "
                                  f"{value} namespace")
    return {"mode": "pod", "uids": _id_map(u.uids, "uids"), "gids": _id_map(u.gids, "gids")}


def sysctl_namespace(name: str) -> str | None:
    """net / ipc for the sysctls a pod may set, None for everything else."""
    dotted = name.replace("/", ".")
    if dotted.startswith("net."):
        return "net"
    if dotted.startswith(("kernel.shm", "kernel.msg", "fs.mqueue.")) or dotted == "kernel.sem":
        return "ipc"
    return None


def check_sysctl_name(name: str) -> None:
    if not name or len(name) > 256:
        raise InvalidArgument(f"sysctl name {name!r} is empty or too long")
    if "/" in name:
        parts = name.strip("/").split("/")
        ok = all(_SYSCTL_SLASH_PART.match(p) and p not in (".", "..") for p in parts)
    else:
        parts = name.split(".")
        ok = all(_SYSCTL_PART.match(p) for p in parts)
    if not ok:
        raise InvalidArgument(f"sysctl name {name!r} is not valid (letters, digits, '_', '-', "
                              "separated by '.' or '/')")


def check_sysctl_value(name: str, value: str) -> None:
    # One value (kernel.sem and port ranges take several numbers separated by blanks); '+' and
    # '=' smuggle extra key=value pairs into helpers that join sysctls (CVE-2022-0811).
    if len(value) > _MAX_SYSCTL_VALUE or not _SYSCTL_VALUE.match(value):
        raise InvalidArgument(f"sysctl {name}: value {value!r} is not a single value (it must be "
                              "non-empty, without '+', '=', newlines or other control characters)")


def check_sysctls(sysctls: dict[str, str], namespaces: dict[str, str]) -> dict[str, str]:
    for name, value in sysctls.items():
        check_sysctl_name(name)
        check_sysctl_value(name, value)
        ns = sysctl_namespace(name)
        if ns is None:
            raise InvalidArgument(f"sysctl {name!r} is not namespaced: setting it would change the "
                                  "host (allowed: kernel.shm*, kernel.msg*, kernel.sem, "
                                  "fs.mqueue.*, net.*)")
        if ns == "net" and namespaces["network"] == "node":
            raise InvalidArgument(f"sysctl {name!r} needs the pod's own network namespace, but the "
                                  "pod uses the host network")
        if ns == "ipc" and namespaces["ipc"] == "node":
            raise InvalidArgument(f"sysctl {name!r} needs the pod's own IPC namespace, but the pod "
                                  "uses the host IPC namespace")
    return dict(sysctls)


def check_dns(dns: api_pb2.DNSConfig) -> None:
    for kind, values in (("server", dns.servers), ("search", dns.searches),
                         ("option", dns.options)):
        for value in values:
            if not value or any(c.isspace() for c in value):
                raise InvalidArgument(f"DNS {kind} {value!r} must be non-empty without whitespace")


def check_hostname(hostname: str) -> None:
    if hostname and not _HOSTNAME.match(hostname):
        raise InvalidArgument(f"hostname {hostname!r} is not a valid host name (1-63 letters, "
                              "digits, '-' and '.')")


def port_mappings(config: api_pb2.PodSandboxConfig) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for pm in config.port_mappings:
        if not 0 < pm.container_port <= 65535 or not 0 <= pm.host_port <= 65535:
            raise InvalidArgument(f"port mapping {pm.host_port}->{pm.container_port} is out of "
                                  "range 1-65535")
        out.append({"container_port": pm.container_port, "host_port": pm.host_port,
                    "protocol": api_pb2.Protocol.Name(pm.protocol), "host_ip": pm.host_ip})
    return out


def plan(request: api_pb2.RunPodSandboxRequest, known_handlers: list[str],
         host_hostname: str) -> SandboxPlan:
    """Validates the whole request; InvalidArgument/NotFound say what is wrong."""
    config = request.config
    check_runtime_handler(request.runtime_handler, known_handlers)
    check_metadata(config)
    labels.check_labels("PodSandboxConfig.labels", config.labels)
    labels.check_annotations("PodSandboxConfig.annotations", config.annotations)
    namespaces = namespace_modes(config)
    userns = user_namespace(config, namespaces)
    sysctls = check_sysctls(dict(config.linux.sysctls), namespaces)
    check_dns(config.dns_config)
    check_hostname(config.hostname)
    for name in ("resources", "overhead"):
        if config.linux.HasField(name):
            resources.check(f"linux.{name}", getattr(config.linux, name))
    hostname = config.hostname
    if not hostname:
        hostname = host_hostname if namespaces["network"] == "node" else config.metadata.name[:63]
    return SandboxPlan(name_key=name_key(config.metadata), runtime_handler=request.runtime_handler,
                       namespaces=namespaces, hostname=hostname, sysctls=sysctls,
                       port_mappings=port_mappings(config), userns=userns)
