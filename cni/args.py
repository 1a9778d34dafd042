"""Building the per-call inputs: CNI_ARGS, capability args (runtimeConfig), plugin stdin.

Capability args follow the CNI conventions document: ``portMappings`` (list of
{hostPort, containerPort, protocol, hostIP}), ``bandwidth`` ({ingressRate, ingressBurst,
egressRate, egressBurst}), ``ipRanges`` (list of range sets). A plugin receives in its
``runtimeConfig`` only the capabilities it declares with ``"capabilities": {name: true}``.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycri_common import errors

_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_PROTOCOLS = {"tcp": "tcp", "udp": "udp", "sctp": "sctp", 0: "tcp", 1: "udp", 2: "sctp"}


@dataclass(frozen=True)
class PodMeta:
    name: str
    namespace: str
    uid: str

    @classmethod
    def from_mapping(cls, meta: Mapping[str, Any] | None) -> PodMeta:
        meta = meta or {}
        values = {}
        for key in ("name", "namespace", "uid"):
            value = meta.get(key, "")
            if not isinstance(value, str):
                raise errors.InvalidArgument(f"pod metadata {key!r} must be a string")
            if any(c in value for c in ";=") or any(c.isspace() for c in value):
                raise errors.InvalidArgument(
                    f"pod metadata {key} {value!r} must not contain ';', '=' or whitespace"
                )
            values[key] = value
        return cls(**values)


def validate_container_id(container_id: str) -> str:
    """CNI_CONTAINERID rules of the spec: non-empty, alphanumerics plus '_', '.', '-'."""
    if not isinstance(container_id, str) or not _CONTAINER_ID_RE.match(container_id):
        raise errors.InvalidArgument(
            f"pod id {container_id!r} is not a valid CNI container id (letters, digits, "
            "'_', '.', '-')"
        )
    return container_id


def validate_ifname(ifname: str) -> str:
    """CNI_IFNAME rules of the spec: 1-15 chars, not '.'/'..', no '/', ':' or whitespace."""
    if (
        not isinstance(ifname, str)
        or not 0 < len(ifname) <= 15
        or ifname in (".", "..")
        or any(c in "/:" or c.isspace() for c in ifname)
    ):
        raise errors.InvalidArgument(f"interface name {ifname!r} is not valid for CNI")
    return ifname


def cni_args(pod_id: str, meta: PodMeta) -> list[list[str]]:
    """The Kubernetes CNI_ARGS pairs, in the order kubelet/containerd send them."""
    return [
        ["IgnoreUnknown", "1"],
        ["K8S_POD_NAMESPACE", meta.namespace],
        ["K8S_POD_NAME", meta.name],
        ["K8S_POD_INFRA_CONTAINER_ID", pod_id],
        ["K8S_POD_UID", meta.uid],
    ]


def format_cni_args(pairs: Iterable[Iterable[str]]) -> str:
    return ";".join("=".join(kv) for kv in pairs)


def _port(value: Any, what: str, allow_zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidArgument(f"port mapping {what} {value!r} is not an integer")
    if not (0 if allow_zero else 1) <= value <= 65535:
        raise errors.InvalidArgument(f"port mapping {what} {value} is out of range 1-65535")
    return value


def port_mappings_capability(mappings: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """CRI PortMapping dicts -> CNI portMappings entries.

    Accepts the CRI field names (container_port, host_port, protocol, host_ip) or the CNI
    ones (containerPort, hostPort, protocol, hostIP). protocol is "TCP"/"UDP"/"SCTP" (any
    case) or the CRI enum number (0, 1, 2). Mappings without a host port (0) are dropped,
    as containerd does: they only document the container port.
    """
    out: list[dict[str, Any]] = []
    for m in mappings or []:
        host_port = _port(m.get("host_port", m.get("hostPort", 0)) or 0, "host port", True)
        container_port = _port(
            m.get("container_port", m.get("containerPort", 0)) or 0, "container port", True
        )
        if host_port == 0:
            continue
        if container_port == 0:
            raise errors.InvalidArgument(f"port mapping for host port {host_port} has no "
                                         "container port")
        proto_in = m.get("protocol", "tcp")
        proto = _PROTOCOLS.get(proto_in.lower() if isinstance(proto_in, str) else proto_in)
        if proto is None:
            raise errors.InvalidArgument(f"port mapping protocol {proto_in!r} is not TCP, UDP "
                                         "or SCTP")
        entry: dict[str, Any] = {
            "hostPort": host_port,
            "containerPort": container_port,
            "protocol": proto,
        }
        host_ip = m.get("host_ip", m.get("hostIP", "")) or ""
        if host_ip:
            try:
                ipaddress.ip_address(host_ip)
            except ValueError:
                raise errors.InvalidArgument(
                    f"port mapping host IP {host_ip!r} is not an IP address"
                ) from None
            entry["hostIP"] = host_ip
        out.append(entry)
    return out


def capability_args(
    port_mappings: Iterable[Mapping[str, Any]] | None = None,
    bandwidth: Mapping[str, int] | None = None,
    ip_ranges: list[list[dict[str, str]]] | None = None,
) -> dict[str, Any]:
    caps: dict[str, Any] = {"portMappings": port_mappings_capability(port_mappings)}
    if bandwidth:
        allowed = {"ingressRate", "ingressBurst", "egressRate", "egressBurst"}
        unknown = set(bandwidth) - allowed
        if unknown:
            raise errors.InvalidArgument(f"unknown bandwidth keys: {sorted(unknown)}")
        caps["bandwidth"] = dict(bandwidth)
    if ip_ranges:
        caps["ipRanges"] = ip_ranges
    return caps


def plugin_config(
    plugin: Mapping[str, Any],
    network_name: str,
    cni_version: str,
    prev_result: Mapping[str, Any] | None,
    caps: Mapping[str, Any],
) -> dict[str, Any]:
    """The stdin document for one plugin of a list (spec "Deriving execution configuration")."""
    conf = dict(plugin)
    conf["name"] = network_name
    conf["cniVersion"] = cni_version
    if prev_result is not None:
        conf["prevResult"] = prev_result
    else:
        conf.pop("prevResult", None)
    declared = plugin.get("capabilities") or {}
    runtime_config = {
        cap: caps[cap] for cap, enabled in declared.items() if enabled is True and cap in caps
    }
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    return conf
