"""CniManager: attach a pod network namespace to the CNI network and detach it again.

setup():   loopback ADD on 'lo', then the chosen network list's ADD on 'eth0' (plugins in
           order, each receiving the previous result as prevResult), result cached on disk.
           A failed ADD runs DEL for the plugins already run (reverse order) and re-raises.
teardown(): DEL (plugins in reverse order, prevResult = cached result) for every cached
           attachment of the pod using the *cached* config, so it works after a restart or a
           conf dir change; without a cache entry the current config is used. Idempotent.
           A missing netns is passed as CNI_NETNS="" as the spec allows for DEL; a missing
           plugin binary or "container unknown" (code 3) is tolerated on DEL.
check():   CHECK with the cached result (spec >= 0.4.0 and unless disableCheck).

Calls for different pods run fully in parallel (plugins such as host-local lock their own
state); calls for the same pod id are serialised by a per-pod lock.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from cni import args as cniargs
from cni.cache import CacheEntry, ResultCache
from cni.config import (
    DEFAULT_BRIDGE,
    DEFAULT_NETWORK_NAME,
    DEFAULT_SUBNET,
    NetworkConfigList,
    choose_network,
    default_conflist,
    loopback_conflist,
    parse_conflist,
    version_tuple,
)
from cni.errors import (
    CODE_CONTAINER_UNKNOWN,
    CniConfigError,
    CniPluginError,
    CniTeardownError,
)
from cni.invoke import (
    DEFAULT_BIN_DIRS,
    DEFAULT_PLUGIN_TIMEOUT,
    Invocation,
    find_plugin,
    require_plugin,
    run_plugin,
)
from cni.result import CniResult, parse_result
from cni.status import NetworkStatus, network_status
from pycri_common import errors

log = logging.getLogger(__name__)

DEFAULT_CONF_DIR = "/etc/cni/net.d"
POD_IFNAME = "eth0"
LOOPBACK_IFNAME = "lo"
_TEMP_MAX_AGE = 60.0


class CniManager:
    """The daemon's CNI client. Safe to call from many threads at once."""

    def __init__(
        self,
        conf_dir: str = DEFAULT_CONF_DIR,
        bin_dirs: Sequence[str] = DEFAULT_BIN_DIRS,
        cache_dir: str = "/var/lib/pycri/cni/results",
        default_subnet: str = DEFAULT_SUBNET,
        plugin_timeout: float = DEFAULT_PLUGIN_TIMEOUT,
        *,
        default_subnet_v6: str | None = None,
        default_bridge: str = DEFAULT_BRIDGE,
        default_network_name: str = DEFAULT_NETWORK_NAME,
        ipam_data_dir: str | None = None,
        use_default_network: bool = True,
        setup_loopback: bool = True,
    ) -> None:
        if plugin_timeout <= 0:
            raise errors.InvalidArgument("CNI plugin timeout must be positive")
        self.conf_dir = conf_dir
        self.bin_dirs = list(bin_dirs)
        self.cache = ResultCache(cache_dir)
        self.plugin_timeout = plugin_timeout
        self.setup_loopback = setup_loopback
        self.default_network: NetworkConfigList | None = None
        if use_default_network:
            self.default_network = default_conflist(
                subnet=default_subnet,
                subnet_v6=default_subnet_v6,
                bridge=default_bridge,
                ipam_data_dir=ipam_data_dir,
                name=default_network_name,
            )
        self._loopback = loopback_conflist()
        self._locks: dict[str, list[Any]] = {}  # pod id -> [lock, users]
        self._locks_guard = threading.Lock()
        self._remove_stale_temp_files()

    # ---- public API -------------------------------------------------------------------

    def load_network(self) -> NetworkConfigList:
        """The network list setup() would use now; CniConfigError when there is none."""
        return choose_network(self.conf_dir, self.default_network)

    def status(self) -> NetworkStatus:
        """(ready, reason, message) for the CRI NetworkReady condition."""
        return network_status(self.conf_dir, self.bin_dirs, self.default_network,
                              need_loopback=self.setup_loopback)

    def setup(
        self,
        pod_id: str,
        netns_path: str,
        pod_meta: Mapping[str, Any] | None,
        port_mappings: Sequence[Mapping[str, Any]] | None = None,
        *,
        bandwidth: Mapping[str, int] | None = None,
        ip_ranges: list[list[dict[str, str]]] | None = None,
    ) -> CniResult:
        """Attach the pod's netns; returns the parsed result (pod IPs primary first)."""
        cniargs.validate_container_id(pod_id)
        meta = cniargs.PodMeta.from_mapping(pod_meta)
        caps = cniargs.capability_args(port_mappings, bandwidth, ip_ranges)
        _require_netns(netns_path, pod_id)
        pairs = cniargs.cni_args(pod_id, meta)
        with self._pod_lock(pod_id):
            network = self.load_network()
            paths = self._plugin_paths(network)
            done = self._finished_attachment(pod_id, netns_path)
            if done is not None:
                return done  # a repeated setup (e.g. a retried RunPodSandbox) is idempotent
            if self.setup_loopback:
                lo_paths = self._plugin_paths(self._loopback)
                self._run_add(self._loopback, lo_paths, pod_id, netns_path, LOOPBACK_IFNAME,
                              pairs, caps, cache=False)
            result = self._run_add(network, paths, pod_id, netns_path, POD_IFNAME, pairs, caps,
                                   cache=True)
            return result

    def teardown(
        self,
        pod_id: str,
        netns_path: str | None,
        pod_meta: Mapping[str, Any] | None = None,
        port_mappings: Sequence[Mapping[str, Any]] | None = None,
        *,
        force: bool = False,
    ) -> list[CniPluginError]:
        """Detach the pod; idempotent. Returns the DEL failures that were tolerated.

        Every plugin gets its DEL even when an earlier one failed (to release as much as
        possible). If any failed, the cache entry is kept and CniTeardownError is raised so
        the caller can retry; with force=True the entry is dropped and the failures are
        returned instead (for removing a pod whose network can never be cleaned).
        """
        cniargs.validate_container_id(pod_id)
        with self._pod_lock(pod_id):
            entries = self.cache.entries_for(pod_id)
            netns = _pick_netns(netns_path, entries)
            if not entries:
                uncached = self._uncached_entry(pod_id, netns, pod_meta, port_mappings)
                entries = [uncached] if uncached is not None else []
            failures: list[CniPluginError] = []
            for entry in entries:
                entry_failures = self._run_del_entry(entry, netns)
                failures.extend(entry_failures)
                if not entry_failures or force:
                    self.cache.delete(entry.container_id, entry.network, entry.ifname)
            if netns and self.setup_loopback:
                lo = CacheEntry(pod_id, self._loopback.name, LOOPBACK_IFNAME, netns,
                                self._loopback.raw, [], {}, None)
                failures.extend(self._run_del_entry(lo, netns))
            if failures and not force:
                raise CniTeardownError(
                    f"CNI teardown of pod {pod_id} failed (will be retried): "
                    + "; ".join(str(f) for f in failures),
                    failures,
                )
            for failure in failures:
                log.warning("CNI teardown of pod %s: ignored: %s", pod_id, failure)
            return failures

    def check(self, pod_id: str, netns_path: str) -> None:
        """Run CHECK for the pod's cached attachment(s); raises the plugin's error."""
        cniargs.validate_container_id(pod_id)
        _require_netns(netns_path, pod_id)
        with self._pod_lock(pod_id):
            entries = [e for e in self.cache.entries_for(pod_id) if e.result is not None]
            if not entries:
                raise errors.NotFound(f"pod {pod_id} has no cached CNI result to check")
            for entry in entries:
                network = parse_conflist(entry.config, f"<cache of {pod_id}>")
                if not network.supports_check():
                    continue
                paths = self._plugin_paths(network)
                inv = self._invocation("CHECK", entry, netns_path)
                for plugin, path in zip(network.plugins, paths, strict=True):
                    conf = cniargs.plugin_config(plugin, network.name, network.cni_version,
                                                 entry.result, entry.capability_args)
                    run_plugin(path, inv, conf, network.name, self.plugin_timeout)

    def cached_result(self, pod_id: str) -> CniResult | None:
        """The parsed cached result of the pod's eth0 attachment (after a restart too)."""
        for entry in self.cache.entries_for(pod_id):
            if entry.ifname == POD_IFNAME and entry.result is not None:
                return parse_result(entry.result, entry.network, entry.ifname)
        return None

    def cached_pod_ids(self) -> set[str]:
        """Pod ids with cached CNI state (for the daemon's start-up garbage collection)."""
        return self.cache.container_ids()

    # ---- internals --------------------------------------------------------------------

    @contextmanager
    def _pod_lock(self, pod_id: str) -> Iterator[None]:
        with self._locks_guard:
            slot = self._locks.setdefault(pod_id, [threading.Lock(), 0])
            slot[1] += 1
        try:
            with slot[0]:
                yield
        finally:
            with self._locks_guard:
                slot[1] -= 1
                if slot[1] == 0:
                    del self._locks[pod_id]

    def _finished_attachment(self, pod_id: str, netns: str) -> CniResult | None:
        """The cached result if this pod is already attached in this netns.

        Leftovers of an interrupted ADD (no result) or of another netns are DELeted first,
        so the new ADD starts clean; CniTeardownError if that fails.
        """
        entries = self.cache.entries_for(pod_id)
        for entry in entries:
            if entry.result is not None and entry.ifname == POD_IFNAME and entry.netns == netns:
                return parse_result(entry.result, entry.network, entry.ifname)
        failures: list[CniPluginError] = []
        for entry in entries:
            stale_netns = entry.netns if is_netns(entry.netns) else ""
            entry_failures = self._run_del_entry(entry, stale_netns)
            if entry_failures:
                failures.extend(entry_failures)
            else:
                self.cache.delete(entry.container_id, entry.network, entry.ifname)
        if failures:
            raise CniTeardownError(
                f"cannot set up pod {pod_id}: DEL of its earlier, unfinished CNI attachment "
                "failed: " + "; ".join(str(f) for f in failures),
                failures,
            )
        return None

    def _plugin_paths(self, network: NetworkConfigList) -> list[str]:
        return [require_plugin(t, self.bin_dirs) for t in network.plugin_types()]

    def _invocation(self, command: str, entry: CacheEntry, netns: str) -> Invocation:
        return Invocation(
            command=command,
            container_id=entry.container_id,
            netns=netns,
            ifname=entry.ifname,
            args=cniargs.format_cni_args(entry.cni_args),
            path=":".join(self.bin_dirs),
        )

    def _run_add(
        self,
        network: NetworkConfigList,
        paths: list[str],
        pod_id: str,
        netns: str,
        ifname: str,
        pairs: list[list[str]],
        caps: dict[str, Any],
        cache: bool,
    ) -> CniResult:
        entry = CacheEntry(pod_id, network.name, ifname, netns, network.raw, pairs, caps, None)
        if cache:
            self.cache.save(entry)  # before any side effect: a crash mid-ADD can still DEL
        inv = self._invocation("ADD", entry, netns)
        prev: dict[str, Any] | None = None
        done = 0
        started = time.monotonic()
        try:
            for plugin, path in zip(network.plugins, paths, strict=True):
                conf = cniargs.plugin_config(plugin, network.name, network.cni_version, prev,
                                             caps)
                done += 1
                out = run_plugin(path, inv, conf, network.name, self.plugin_timeout)
                if out is None:
                    raise CniPluginError(plugin["type"], "ADD", network.name,
                                         "exited 0 but printed no result")
                prev = out
            assert prev is not None
            result = parse_result(prev, network.name, ifname)
        except BaseException as exc:
            self._undo_add(network, entry, netns, done, prev, exc, cache)
            raise
        if cache:
            entry.result = prev
            self.cache.save(entry)
        log.debug("CNI ADD %s/%s for pod %s took %.1f ms: %s", network.name, ifname, pod_id,
                  (time.monotonic() - started) * 1000, result.ips)
        return result

    def _undo_add(
        self,
        network: NetworkConfigList,
        entry: CacheEntry,
        netns: str,
        done: int,
        prev: dict[str, Any] | None,
        exc: BaseException,
        cache: bool,
    ) -> None:
        """DEL the plugins already run (the failed one included), newest first."""
        if not isinstance(exc, Exception):
            return  # interrupted (e.g. KeyboardInterrupt): the pending cache entry remains
        entry.result = prev
        partial = NetworkConfigList(
            name=network.name,
            cni_version=network.cni_version,
            plugins=network.plugins[:done],
            raw=network.raw,
            source=network.source,
        )
        failures = self._run_del(partial, entry, netns)
        if failures:
            detail = "; ".join(str(f) for f in failures)
            note = f"; cleanup DEL also failed (kept for the next teardown): {detail}"
            if exc.args and isinstance(exc.args[0], str):
                exc.args = (exc.args[0] + note, *exc.args[1:])
            if cache:
                self.cache.save(entry)
            log.error("CNI ADD cleanup of pod %s failed: %s", entry.container_id, detail)
        elif cache:
            self.cache.delete(entry.container_id, entry.network, entry.ifname)

    def _run_del_entry(self, entry: CacheEntry, netns: str) -> list[CniPluginError]:
        try:
            network = parse_conflist(entry.config, f"<cache of {entry.container_id}>")
        except errors.PycriError as exc:
            return [CniPluginError("?", "DEL", entry.network, f"cached config unusable: {exc}")]
        return self._run_del(network, entry, netns)

    def _run_del(
        self, network: NetworkConfigList, entry: CacheEntry, netns: str
    ) -> list[CniPluginError]:
        inv = self._invocation("DEL", entry, netns)
        prev = entry.result if version_tuple(network.cni_version) >= (0, 4, 0) else None
        failures: list[CniPluginError] = []
        for plugin in reversed(network.plugins):
            path = find_plugin(plugin["type"], self.bin_dirs)
            if path is None:
                log.warning("CNI DEL for pod %s: plugin %r not found; skipped",
                            entry.container_id, plugin["type"])
                continue
            conf = cniargs.plugin_config(plugin, network.name, network.cni_version, prev,
                                         entry.capability_args)
            try:
                run_plugin(path, inv, conf, network.name, self.plugin_timeout)
            except CniPluginError as exc:
                if _tolerated_on_del(exc):
                    log.info("CNI DEL for pod %s: tolerated: %s", entry.container_id, exc)
                    continue
                failures.append(exc)
        return failures

    def _uncached_entry(
        self,
        pod_id: str,
        netns: str,
        pod_meta: Mapping[str, Any] | None,
        port_mappings: Sequence[Mapping[str, Any]] | None,
    ) -> CacheEntry | None:
        """A DEL target built from the current config, for pods without a cache entry."""
        try:
            network = self.load_network()
        except CniConfigError:
            return None  # nothing cached and nothing configured: nothing we could DEL
        meta = cniargs.PodMeta.from_mapping(pod_meta)
        caps = cniargs.capability_args(port_mappings)
        return CacheEntry(pod_id, network.name, POD_IFNAME, netns, network.raw,
                          cniargs.cni_args(pod_id, meta), caps, None)

    def _remove_stale_temp_files(self) -> None:
        try:
            names = os.listdir(self.cache.dir)
        except FileNotFoundError:
            return
        now = time.time()
        for name in names:
            if not name.startswith(".tmp-"):
                continue
            path = os.path.join(self.cache.dir, name)
            try:
                if now - os.stat(path).st_mtime > _TEMP_MAX_AGE:
                    os.unlink(path)
            except FileNotFoundError:
                pass


def is_netns(path: str | None) -> bool:
    """True if path is a network namespace file (nsfs: a pinned bind mount or /proc/*/ns/net).

    An unmounted pin file still exists but is no namespace; plugins would fail on it.
    """
    if not path:
        return False
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _require_netns(path: str, pod_id: str) -> None:
    if not is_netns(path):
        raise errors.FailedPrecondition(
            f"network namespace {path!r} of pod {pod_id} does not exist or is not a network "
            "namespace (nsfs) file"
        )


def _pick_netns(given: str | None, entries: list[CacheEntry]) -> str:
    """The netns for DEL: the given one, else the cached one, if still a namespace; else ""."""
    if given:
        return given if is_netns(given) else ""
    for entry in entries:
        if entry.ifname == POD_IFNAME and is_netns(entry.netns):
            return entry.netns
    return ""


def _tolerated_on_del(exc: CniPluginError) -> bool:
    if exc.cni_code == CODE_CONTAINER_UNKNOWN:
        return True
    text = f"{exc.cni_msg} {exc.details}".lower()
    return "failed to find plugin" in text or "plugin not found" in text
