"""Parsing CNI ADD results of every spec version into one shape, and picking the pod IPs.

Versions 0.3.0 and later: ``interfaces`` [{name, mac, sandbox}], ``ips`` [{address (CIDR),
gateway, interface (index into interfaces)}], ``routes``, ``dns``. 0.1.0/0.2.0 results
(``ip4``/``ip6`` objects) are converted to that shape.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cni.errors import CniError


@dataclass(frozen=True)
class IPConfig:
    address: str  # CIDR, e.g. "10.88.0.2/16"
    gateway: str | None
    interface: int | None  # index into CniResult.interfaces

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass(frozen=True)
class CniResult:
    """An ADD result reduced to what the runtime needs, plus the raw result.

    ips: pod IPs (plain addresses) of the pod interface, primary first (the first IPv4 if
    any, as containerd picks it), then the others (e.g. IPv6) in result order.
    gateway: the gateway of the primary IP, if the plugin reported one.
    """

    network: str
    ifname: str
    ips: list[str]
    gateway: str | None
    interfaces: list[dict[str, Any]]
    ip_configs: list[IPConfig]
    routes: list[dict[str, Any]]
    dns: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @property
    def primary_ip(self) -> str | None:
        return self.ips[0] if self.ips else None


def normalize_result(raw: dict[str, Any]) -> dict[str, Any]:
    """A result in the >= 0.3.0 shape (a copy); 0.1.0/0.2.0 ``ip4``/``ip6`` converted."""
    if "ips" in raw or "interfaces" in raw or not ("ip4" in raw or "ip6" in raw):
        out = dict(raw)
        out.setdefault("interfaces", [])
        out.setdefault("ips", [])
        out.setdefault("routes", [])
        out.setdefault("dns", {})
        return out
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, Any]] = []
    for key in ("ip4", "ip6"):
        block = raw.get(key)
        if not isinstance(block, dict):
            continue
        entry: dict[str, Any] = {"address": block.get("ip")}
        if block.get("gateway"):
            entry["gateway"] = block["gateway"]
        ips.append(entry)
        routes.extend(r for r in _list(block.get("routes")) if isinstance(r, dict))
    return {
        "cniVersion": raw.get("cniVersion", "0.2.0"),
        "interfaces": [],
        "ips": ips,
        "routes": routes,
        "dns": raw.get("dns") or {},
    }


def parse_result(raw: dict[str, Any], network: str, ifname: str) -> CniResult:
    """Parse a final ADD result; the pod IPs are those on interface ifname in the sandbox."""
    norm = normalize_result(raw)
    interfaces = [i for i in _list(norm["interfaces"]) if isinstance(i, dict)]
    if not isinstance(norm["ips"], list):
        raise CniError(f"CNI network {network!r} returned a result whose 'ips' is not a list")
    configs: list[IPConfig] = []
    for entry in norm["ips"]:
        if not isinstance(entry, dict):
            continue
        address = entry.get("address")
        try:
            if not isinstance(address, str):  # ip_interface() takes an int too: 167772161
                raise ValueError(address)
            ipaddress.ip_interface(address)
        except ValueError:
            raise CniError(
                f"CNI network {network!r} returned an invalid IP address {address!r}"
            ) from None
        index = entry.get("interface")
        gateway = entry.get("gateway")
        configs.append(
            IPConfig(
                address=address,
                gateway=gateway if isinstance(gateway, str) and gateway else None,
                interface=index if isinstance(index, int) else None,
            )
        )
    pod_configs = [c for c in configs if _is_pod_interface(c, interfaces, ifname, True)]
    if not pod_configs:  # some plugins do not set "sandbox": match by name only
        pod_configs = [c for c in configs if _is_pod_interface(c, interfaces, ifname, False)]
    ordered = sorted(pod_configs, key=lambda c: 0 if c.version == 4 else 1)
    ips: list[str] = []
    for cfg in ordered:
        if cfg.ip not in ips:
            ips.append(cfg.ip)
    return CniResult(
        network=network,
        ifname=ifname,
        ips=ips,
        gateway=ordered[0].gateway if ordered else None,
        interfaces=interfaces,
        ip_configs=configs,
        routes=[r for r in _list(norm["routes"]) if isinstance(r, dict)],
        dns=norm["dns"] if isinstance(norm["dns"], dict) else {},
        raw=raw,
    )


def _list(value: Any) -> list[Any]:
    """A list field of a result; anything else (a plugin's mistake) counts as empty."""
    return value if isinstance(value, list) else []


def _is_pod_interface(
    cfg: IPConfig, interfaces: list[dict[str, Any]], ifname: str, need_sandbox: bool
) -> bool:
    """True when the IP belongs to the pod's interface (or the result does not say)."""
    if cfg.interface is None or not interfaces:
        return True
    if not 0 <= cfg.interface < len(interfaces):
        return False
    iface = interfaces[cfg.interface]
    return iface.get("name") == ifname and (bool(iface.get("sandbox")) or not need_sandbox)
