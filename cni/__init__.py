"""pycri's CNI client (CNI spec 1.x; Debian's containernetworking-plugins or /opt/cni/bin).

Public API (everything else is internal):

``CniManager(conf_dir="/etc/cni/net.d", bin_dirs=("/opt/cni/bin", "/usr/lib/cni"),
cache_dir=..., default_subnet="10.88.0.0/16", plugin_timeout=60.0, *, default_subnet_v6=None,
default_bridge="pycri0", default_network_name="pycri", ipam_data_dir=None,
use_default_network=True, setup_loopback=True)``
    Thread-safe. The network is the first valid ``*.conflist``/``*.conf``/``*.json`` in conf_dir
    by file name (re-read on every setup, so config changes apply to new pods), or - only when
    conf_dir holds no config file - the shipped default (cni/data/pycri.conflist: bridge with
    isGateway+ipMasq+hairpin, host-local IPAM on default_subnet [+ default_subnet_v6],
    portmap with the portMappings capability). 'lo' is brought up with the loopback plugin
    separately (like containerd), so user conflists need not include it.

  ``setup(pod_id, netns_path, pod_meta={"name","namespace","uid"}, port_mappings=[...],
  *, bandwidth=None, ip_ranges=None) -> CniResult``
      ADD. port_mappings: dicts with CRI (container_port, host_port, protocol, host_ip) or CNI
      (containerPort, hostPort, protocol, hostIP) keys; protocol "TCP"/"UDP"/"SCTP" or the CRI
      enum number; host_port 0 entries are dropped. netns_path must be a network namespace
      file (a pinned nsfs bind mount). On failure everything added is DELeted and the error
      raised (CniPluginError naming the plugin, subclassed by CNI error code: config codes ->
      FAILED_PRECONDITION, 11 -> UNAVAILABLE, timeout -> DEADLINE_EXCEEDED, else INTERNAL;
      CniConfigError (FAILED_PRECONDITION) when no network or a plugin binary is missing;
      InvalidArgument for bad input). Idempotent: a pod already attached in that netns gets
      its cached result back without running plugins; leftovers of an interrupted ADD (e.g.
      kill -9 of the daemon) are DELeted before the new ADD.
  ``teardown(pod_id, netns_path_or_None, pod_meta=None, port_mappings=None, *, force=False)
  -> list[CniPluginError]``
      DEL; idempotent; uses the cached config and args of the ADD (works after a restart and
      with a changed conf dir). netns None -> the cached netns path if it is still a
      namespace; a missing/unmounted netns is passed as CNI_NETNS="" (spec). Raises
      CniTeardownError (UNAVAILABLE) when a plugin's DEL failed, keeping the cache for a
      retry; force=True drops the cache and returns the failures instead.
  ``check(pod_id, netns_path) -> None``   CHECK with the cached result.
  ``status() -> NetworkStatus(ready, reason, message)``   for the CRI NetworkReady condition.
  ``cached_result(pod_id) -> CniResult | None``   the pod's IPs after a daemon restart.
  ``cached_pod_ids() -> set[str]``   pods with CNI state, for start-up garbage collection.
  ``load_network() -> NetworkConfigList``   the list setup() would use now.

``CniResult``: network, ifname, ips (pod IPs on eth0, primary = first IPv4, then IPv6),
primary_ip, gateway, interfaces, ip_configs, routes, dns, raw (the final plugin's result).

``network_status(conf_dir, bin_dirs, default=None, probe_versions=True, need_loopback=True)
-> NetworkStatus`` checks config + plugin binaries + their supported versions.

Known plugin limitations (Debian containernetworking-plugins 1.1.1):
- bridge with ipMasq finds the masquerade rule to delete via the addresses of eth0 in the
  netns: DEL with the netns already gone leaves that NAT rule behind (IP and portmap rules are
  still released). The daemon must run teardown() before it unpins the pod's netns.
- portmap's CHECK fails for IPv4-only pods (it checks IPv6 chains it never created), so
  check() on the default network reports that error.
- portmap never deletes its top-level CNI-HOSTPORT-* chains (by design, like cni0 bridges).

Cache: one file per (pod id, network, ifname) in cache_dir, written atomically before ADD
starts and again with the result. Put it on persistent storage (e.g. <root>/cni/results): after
a reboot host-local's IP allocations (persistent, /var/lib/cni/networks by default) can then
still be released by DEL.
"""
from cni.config import NetworkConfigList, default_conflist
from cni.errors import (
    CniConfigError,
    CniError,
    CniPluginError,
    CniPluginTimeout,
    CniTeardownError,
)
from cni.invoke import DEFAULT_BIN_DIRS, DEFAULT_PLUGIN_TIMEOUT
from cni.manager import DEFAULT_CONF_DIR, CniManager
from cni.result import CniResult
from cni.status import NetworkStatus, network_status

__all__ = [
    "DEFAULT_BIN_DIRS",
    "DEFAULT_CONF_DIR",
    "DEFAULT_PLUGIN_TIMEOUT",
    "CniConfigError",
    "CniError",
    "CniManager",
    "CniPluginError",
    "CniPluginTimeout",
    "CniResult",
    "CniTeardownError",
    "NetworkConfigList",
    "NetworkStatus",
    "default_conflist",
    "network_status",
]
