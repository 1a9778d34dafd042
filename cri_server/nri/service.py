"""The runtime side of NRI: the socket, the plugins, and the events they subscribed to.

A plugin connects to ``nri.socket_path`` (or is started by pycri from ``nri.plugin_path``
with a pre-connected socket), registers with its name and two-digit index within
``plugin_registration_timeout``, is configured (its config file from
``plugin_config_path``, our name, version and timeouts; it answers with its event
subscriptions) and synchronized with every pod and container NRI knows; only then does it
get events. Plugins are called in index order, one event at a time (events and
synchronization are serialized, so a plugin never misses a pod or container created while
it synchronizes), each call bounded by ``plugin_request_timeout``.

A plugin that times out, closes its connection or breaks the protocol is disconnected and
the event goes on without it. A plugin that answers RunPodSandbox, CreateContainer,
StartContainer or UpdateContainer with an error fails that CRI call; errors in the other
events are logged.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message

from cri_server.containers.record import ContainerRecord
from cri_server.nri import adjust, convert
from cri_server.nri.plugin import VALID_EVENTS, Plugin, event_bit
from cri_server.sandboxes.record import SandboxRecord
from nri.ttrpc import Code, RpcError, Status
from proto import api_pb2
from proto import nri_api_pb2 as nri
from pycri_common.errors import FailedPrecondition, PycriError
from pycri_common.outside_files import read_regular_file
from pycri_common.version import __version__
from runtime.container_spec import ContainerSpec

log = logging.getLogger(__name__)

NRI_VERSION = "v0.12.1"  # the NRI API revision pycri's schema follows (proto/nri_api.proto)
MAX_PLUGIN_CONFIG = 1 << 20
MAX_PLUGINS = 64
SYNC_CHUNK_BYTES = 3 << 20  # Synchronize payload per message, below ttrpc's 4 MiB
M = TypeVar("M", bound=Message)

# Events a plugin may still handle through the deprecated StateChange RPC.
_STATE_CHANGE = {nri.RUN_POD_SANDBOX, nri.STOP_POD_SANDBOX, nri.REMOVE_POD_SANDBOX,
                 nri.POST_CREATE_CONTAINER, nri.START_CONTAINER, nri.POST_START_CONTAINER,
                 nri.POST_UPDATE_CONTAINER, nri.REMOVE_CONTAINER, nri.POST_UPDATE_POD_SANDBOX}


@dataclass
class NriSettings:
    socket_path: str
    plugin_path: str
    plugin_config_path: str
    registration_timeout: float
    request_timeout: float
    disable_connections: bool


@dataclass
class RuntimeState:
    """What NRI needs of the managers (set by the wiring)."""

    pods: Callable[[], list[SandboxRecord]]
    containers: Callable[[], list[ContainerRecord]]
    pod: Callable[[str], SandboxRecord]
    # applies a resource update (ContainerSpec names) to a live container, without NRI hooks
    update: Callable[[str, dict[str, Any]], None]
    # stops a container a plugin evicts (container id, reason)
    evict: Callable[[str, str], None] | None = None
    # resolves CDI device names a plugin requests (the container manager's CDI registry)
    cdi: adjust.CdiResolver | None = None


class NriService:
    def __init__(self, settings: NriSettings) -> None:
        self.settings = settings
        self.state: RuntimeState | None = None
        self._lock = threading.RLock()        # events and synchronization, one at a time
        self._plist_lock = threading.Lock()   # the plugin list
        self._plugins: list[Plugin] = []
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._pods: dict[str, SandboxRecord] = {}       # what NRI has announced, by id
        self._ctrs: dict[str, ContainerRecord] = {}
        self._stopped: set[str] = set()  # pods and containers told about their stop

    # ------------------------------------------------------------ lifecycle

    def start(self, state: RuntimeState) -> None:
        self.state = state
        with self._lock:
            self._pods = {p.id: p for p in state.pods()}
            self._ctrs = {c.id: c for c in state.containers()}
        if not self.settings.disable_connections:
            self._listen()
        self._start_preinstalled()

    def _listen(self) -> None:
        path = self.settings.socket_path
        os.makedirs(os.path.dirname(path) or ".", mode=0o710, exist_ok=True)
        if _in_use(path):
            log.error("NRI: %s is served by another process (another runtime?); not listening "
                      "for NRI plugins", path)
            return
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(16)
        self._listener = sock
        t = threading.Thread(target=self._accept_loop, name="nri-accept", daemon=True)
        t.start()
        self._threads.append(t)
        log.info("NRI: listening on %s", path)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._stopping.is_set():
                conn.close()
                return
            self._connect(conn)

    def _connect(self, conn: socket.socket, name: str = "", index: str = "") -> None:
        with self._plist_lock:
            too_many = len(self._plugins) >= MAX_PLUGINS
        if too_many:
            log.warning("NRI: refusing a plugin connection: %d plugins connected", MAX_PLUGINS)
            conn.close()
            return
        plugin = Plugin(conn, request_timeout=self.settings.request_timeout,
                        on_update=self._unsolicited_update, on_close=self._forget,
                        name=name, index=index)
        threading.Thread(target=self._setup, args=(plugin,), name="nri-register",
                         daemon=True).start()

    def _start_preinstalled(self) -> None:
        """Executables named NN-name in plugin_path, started with a connected socket."""
        try:
            entries = sorted(os.scandir(self.settings.plugin_path), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            index, _, name = entry.name.partition("-")
            if not (len(index) == 2 and index.isdigit() and name):
                log.warning("NRI: ignoring %s: plugin files are named NN-name", entry.path)
                continue
            if not entry.is_file() or not os.access(entry.path, os.X_OK):
                continue
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                env = {**os.environ, "NRI_PLUGIN_SOCKET": str(theirs.fileno()),
                       "NRI_PLUGIN_NAME": name, "NRI_PLUGIN_IDX": index}
                proc = subprocess.Popen([entry.path], env=env, pass_fds=[theirs.fileno()],
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                log.warning("NRI: cannot start plugin %s: %s", entry.path, e)
                ours.close()
                continue
            finally:
                theirs.close()
            self._procs.append(proc)
            log.info("NRI: started plugin %s (pid %d)", entry.path, proc.pid)
            self._connect(ours, name, index)

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.settings.socket_path)
        for p in self._snapshot():
            self._shutdown(p)
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _shutdown(self, plugin: Plugin) -> None:
        """Tells a plugin the runtime is going away (Shutdown), then hangs up."""
        try:
            plugin.call("Shutdown", nri.Empty(), nri.Empty,
                        timeout=min(1.0, self.settings.request_timeout))
        except RpcError as e:
            if e.code != Code.UNIMPLEMENTED:
                log.info("NRI: plugin %r: Shutdown: %s", plugin, e)
        plugin.close("runtime shutting down")

    # ------------------------------------------------------------ plugins

    def _snapshot(self) -> list[Plugin]:
        with self._plist_lock:
            return [p for p in self._plugins if not p.closed]

    def plugins(self) -> list[str]:
        return [repr(p) for p in self._snapshot()]

    def _forget(self, plugin: Plugin) -> None:
        with self._plist_lock:
            if plugin in self._plugins:
                self._plugins.remove(plugin)

    def _plugin_config(self, plugin: Plugin) -> str:
        base = Path(self.settings.plugin_config_path)
        for name in (f"{plugin.index}-{plugin.name}.conf", f"{plugin.name}.conf"):
            if not os.path.lexists(base / name):
                continue
            try:
                data = read_regular_file(base / name, MAX_PLUGIN_CONFIG, "NRI plugin config")
            except (OSError, PycriError) as e:
                log.warning("NRI: plugin %r: config %s: %s", plugin, base / name, e)
                return ""
            return data.decode("utf-8", errors="replace")
        return ""

    def _setup(self, plugin: Plugin) -> None:
        plugin.start()
        s = self.settings
        if not plugin.registered.wait(s.registration_timeout) or plugin.registration_error:
            reason = plugin.registration_error or "registration timed out"
            log.warning("NRI: dropping plugin %r: %s", plugin, reason)
            plugin.close(reason)
            return
        try:
            reply = plugin.call("Configure", nri.ConfigureRequest(
                config=self._plugin_config(plugin), runtime_name="pycri",
                runtime_version=__version__,
                registration_timeout=int(s.registration_timeout * 1000),
                request_timeout=int(s.request_timeout * 1000), NRI_version=NRI_VERSION),
                nri.ConfigureResponse)
            # 0 is every event but validation, which a plugin must ask for by name (upstream's
            # 0 includes it, but its stubs always send an explicit mask; a hand-written plugin
            # subscribing to "everything" should not become a validator by accident)
            events = reply.events or (VALID_EVENTS & ~event_bit(
                nri.VALIDATE_CONTAINER_ADJUSTMENT))
            if events & ~VALID_EVENTS:
                raise RpcError(Status(Code.INVALID_ARGUMENT,
                                      f"invalid event subscription 0x{events:x}"))
            plugin.events = events
            with self._lock:
                updates = self._synchronize(plugin)
                with self._plist_lock:
                    if not plugin.closed:
                        self._plugins.append(plugin)
                        self._plugins.sort(key=lambda p: p.sort_key)
        except RpcError as e:
            log.warning("NRI: dropping plugin %r: %s", plugin, e)
            plugin.close(str(e))
            return
        log.info("NRI: plugin %r configured (events 0x%x) and synchronized", plugin,
                 plugin.events)
        self._apply_updates(plugin, updates)

    def _synchronize(self, plugin: Plugin) -> list[nri.ContainerUpdate]:
        """Every pod and container, in as many messages as the size limit needs: all but the
        last say more=true, and the plugin must answer those with more=true and no updates
        (as upstream's stubs do)."""
        pods = [convert.pod_sandbox(p) for p in self._pods.values()]
        ctrs = [convert.container(c) for c in self._ctrs.values()]
        chunks = _sync_chunks(pods, ctrs, SYNC_CHUNK_BYTES)
        reply = nri.SynchronizeResponse()
        for i, (p, c) in enumerate(chunks):
            more = i < len(chunks) - 1
            reply = plugin.call("Synchronize", nri.SynchronizeRequest(pods=p, containers=c,
                                                                      more=more),
                                nri.SynchronizeResponse)
            if more and (reply.update or not reply.more):
                raise RpcError(Status(Code.FAILED_PRECONDITION,
                                      "plugin does not handle split Synchronize requests"),
                               fatal=True)
        return list(reply.update)

    # ------------------------------------------------------------ updates from plugins

    def _apply_updates(self, plugin: Plugin | None,
                       updates: list[nri.ContainerUpdate]) -> list[nri.ContainerUpdate]:
        failed = []
        for u in updates:
            if self.state is None:
                break
            res = adjust.resource_update(u.linux.resources) if u.HasField("linux") else {}
            if not res:
                continue
            try:
                self.state.update(u.container_id, res)
            except PycriError as e:
                log.warning("NRI: update of container %s by %r failed: %s", u.container_id[:12],
                            plugin, e)
                if not u.ignore_failure:
                    failed.append(u)
        return failed

    def _evict(self, plugin: Plugin | str | None,
               evictions: list[nri.ContainerEviction]) -> list[nri.ContainerEviction]:
        """Stops each container a plugin evicts (as containerd does); returns the failed."""
        failed = []
        for e in evictions:
            log.warning("NRI: plugin %r evicts container %s: %s", plugin, e.container_id[:12],
                        e.reason or "no reason given")
            if self.state is None or self.state.evict is None:
                failed.append(e)
                continue
            try:
                self.state.evict(e.container_id, e.reason)
            except PycriError as err:
                log.warning("NRI: eviction of container %s failed: %s", e.container_id[:12],
                            err)
                failed.append(e)
        return failed

    def _unsolicited_update(self, plugin: Plugin, updates: list[nri.ContainerUpdate],
                            evictions: list[nri.ContainerEviction] | None = None
                            ) -> list[nri.ContainerUpdate]:
        log.info("NRI: plugin %r updates %d containers", plugin, len(updates))
        failed = self._apply_updates(plugin, updates)
        self._evict(plugin, list(evictions or []))
        return failed

    # ------------------------------------------------------------ calling plugins

    def _each(self, event: int, method: str, request: Message, response_type: type[M],
              pod: nri.PodSandbox, ctr: nri.Container | None, *, fail: bool
              ) -> list[tuple[Plugin, M]]:
        out = []
        for plugin in self._snapshot():
            if not plugin.subscribed(event):
                continue
            try:
                out.append((plugin, plugin.call(method, request, response_type)))
                continue
            except RpcError as e:
                err = e
            if err.code == Code.UNIMPLEMENTED and event in _STATE_CHANGE:
                try:
                    plugin.call("StateChange", nri.StateChangeEvent(
                        event=nri.Event.Name(event), pod=pod, container=ctr), nri.Empty)
                    out.append((plugin, response_type()))
                    continue
                except RpcError as e:
                    err = e
            if err.fatal:
                log.warning("NRI: disconnecting plugin %r: %s: %s", plugin, method, err)
                plugin.close(f"{method}: {err}")
                continue
            if err.code == Code.UNIMPLEMENTED:
                continue
            if fail:
                raise FailedPrecondition(f"NRI plugin {plugin!r} failed {method}: "
                                         f"{err.status.message}")
            log.warning("NRI: plugin %r: %s: %s", plugin, method, err)
        return out

    def _pod_event(self, event: int, method: str, request_type: type[Message],
                   response_type: type[M], pod: SandboxRecord, *, fail: bool) -> None:
        msg = convert.pod_sandbox(pod)
        self._each(event, method, request_type(pod=msg), response_type, msg, None, fail=fail)

    def _ctr_event(self, event: int, method: str, request_type: type[Message],
                   response_type: type[M], pod: SandboxRecord, ctr: ContainerRecord, *,
                   fail: bool, spec: dict[str, Any] | None = None) -> list[tuple[Plugin, M]]:
        p, c = convert.pod_sandbox(pod), convert.container(ctr, spec)
        return self._each(event, method, request_type(pod=p, container=c), response_type, p, c,
                          fail=fail)

    # ------------------------------------------------------------ NriHooks

    def run_pod_sandbox(self, pod: SandboxRecord) -> None:
        with self._lock:
            self._pod_event(nri.RUN_POD_SANDBOX, "RunPodSandbox", nri.RunPodSandboxRequest,
                            nri.RunPodSandboxResponse, pod, fail=True)
            self._pods[pod.id] = pod

    def stop_pod_sandbox(self, pod: SandboxRecord) -> None:
        with self._lock:
            if pod.id in self._stopped:
                return  # StopPodSandbox is idempotent; plugins hear of it once
            self._stopped.add(pod.id)
            self._pod_event(nri.STOP_POD_SANDBOX, "StopPodSandbox", nri.StopPodSandboxRequest,
                            nri.StopPodSandboxResponse, pod, fail=False)
            if pod.id in self._pods:
                self._pods[pod.id] = pod

    def remove_pod_sandbox(self, pod: SandboxRecord) -> None:
        with self._lock:
            self._pod_event(nri.REMOVE_POD_SANDBOX, "RemovePodSandbox",
                            nri.RemovePodSandboxRequest, nri.RemovePodSandboxResponse, pod,
                            fail=False)
            self._pods.pop(pod.id, None)
            self._stopped.discard(pod.id)

    def update_pod_sandbox(self, pod: SandboxRecord,
                           linux: api_pb2.LinuxPodSandboxConfig) -> None:
        with self._lock:
            msg = convert.pod_sandbox(pod)
            req = nri.UpdatePodSandboxRequest(
                pod=msg, overhead_linux_resources=convert.cri_resources(linux.overhead),
                linux_resources=convert.cri_resources(linux.resources))
            self._each(nri.UPDATE_POD_SANDBOX, "UpdatePodSandbox", req,
                       nri.UpdatePodSandboxResponse, msg, None, fail=True)

    def post_update_pod_sandbox(self, pod: SandboxRecord) -> None:
        with self._lock:
            self._pod_event(nri.POST_UPDATE_POD_SANDBOX, "PostUpdatePodSandbox",
                            nri.PostUpdatePodSandboxRequest, nri.PostUpdatePodSandboxResponse,
                            pod, fail=False)

    def create_container(self, pod: SandboxRecord, ctr: ContainerRecord,
                         spec: ContainerSpec) -> ContainerSpec:
        with self._lock:
            spec_json = spec.to_json()
            answers = self._ctr_event(nri.CREATE_CONTAINER, "CreateContainer",
                                      nri.CreateContainerRequest, nri.CreateContainerResponse,
                                      pod, ctr, fail=True, spec=spec_json)
            merged = adjust.Merged()
            others: list[nri.ContainerUpdate] = []
            evictions: list[tuple[Plugin, list[nri.ContainerEviction]]] = []
            for plugin, reply in answers:
                if reply.HasField("adjust"):
                    merged.add(repr(plugin), reply.adjust)
                for u in reply.update:
                    if u.container_id == ctr.id:
                        merged.add(repr(plugin), nri.ContainerAdjustment(
                            linux=nri.LinuxContainerAdjustment(resources=u.linux.resources)))
                    else:
                        others.append(u)
                if reply.evict:
                    evictions.append((plugin, list(reply.evict)))
            self._validate(pod, ctr, spec_json, merged, others)
            if not merged.empty:
                cdi = self.state.cdi if self.state is not None else None
                spec = merged.apply(spec_json, ctr.annotations, cdi)
                log.info("NRI: container %s adjusted (%s)", ctr.id[:12],
                         ", ".join(sorted(merged.owners)))
            self._ctrs[ctr.id] = ctr
        self._apply_updates(None, others)
        for plugin, evict in evictions:
            self._evict(plugin, evict)
        return spec

    def _validate(self, pod: SandboxRecord, ctr: ContainerRecord, spec_json: dict[str, Any],
                  merged: adjust.Merged, others: list[nri.ContainerUpdate]) -> None:
        """ValidateContainerAdjustment to every validator plugin (subscribed to that event):
        the combined adjustment, who owns what, and the plugins that took part (every
        connected one, as upstream). A rejection or an error fails CreateContainer; a plugin
        answering UNIMPLEMENTED is skipped."""
        validators = [p for p in self._snapshot()
                      if p.subscribed(nri.VALIDATE_CONTAINER_ADJUSTMENT)]
        if not validators:
            return
        owners = nri.OwningPlugins()
        owners.owners[ctr.id].CopyFrom(adjust.field_owners(merged.owners))
        req = nri.ValidateContainerAdjustmentRequest(
            pod=convert.pod_sandbox(pod), container=convert.container(ctr, spec_json),
            adjust=merged.adjustment(), update=others, owners=owners,
            plugins=[nri.PluginInstance(name=p.name, index=p.index) for p in self._snapshot()])
        for plugin in validators:
            try:
                reply = plugin.call("ValidateContainerAdjustment", req,
                                    nri.ValidateContainerAdjustmentResponse)
            except RpcError as e:
                if e.code == Code.UNIMPLEMENTED:
                    continue
                if e.fatal:
                    plugin.close(f"ValidateContainerAdjustment: {e}")
                raise FailedPrecondition(f"NRI validator {plugin!r} failed "
                                         f"ValidateContainerAdjustment: {e.status.message}"
                                         ) from None
            if reply.reject:
                raise FailedPrecondition(f"NRI validator {plugin!r} rejected the adjustments "
                                         f"of container {ctr.name}: {reply.reason or 'no reason'}")

    def post_create_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        with self._lock:
            self._ctr_event(nri.POST_CREATE_CONTAINER, "PostCreateContainer",
                            nri.PostCreateContainerRequest, nri.PostCreateContainerResponse,
                            pod, ctr, fail=False)

    def start_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        with self._lock:
            self._ctr_event(nri.START_CONTAINER, "StartContainer", nri.StartContainerRequest,
                            nri.StartContainerResponse, pod, ctr, fail=True)

    def post_start_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        with self._lock:
            self._ctr_event(nri.POST_START_CONTAINER, "PostStartContainer",
                            nri.PostStartContainerRequest, nri.PostStartContainerResponse,
                            pod, ctr, fail=False)

    def stop_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        with self._lock:
            if ctr.id in self._stopped:
                return
            self._stopped.add(ctr.id)
            answers = self._ctr_event(nri.STOP_CONTAINER, "StopContainer",
                                      nri.StopContainerRequest, nri.StopContainerResponse,
                                      pod, ctr, fail=False)
        for plugin, reply in answers:
            self._apply_updates(plugin, [u for u in reply.update if u.container_id != ctr.id])

    def remove_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        with self._lock:
            self._ctr_event(nri.REMOVE_CONTAINER, "RemoveContainer", nri.RemoveContainerRequest,
                            nri.RemoveContainerResponse, pod, ctr, fail=False)
            self._ctrs.pop(ctr.id, None)
            self._stopped.discard(ctr.id)

    def update_container(self, pod: SandboxRecord, ctr: ContainerRecord,
                         resources: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            p, c = convert.pod_sandbox(pod), convert.container(ctr)
            req = nri.UpdateContainerRequest(pod=p, container=c,
                                             linux_resources=convert.resources(resources))
            answers = self._each(nri.UPDATE_CONTAINER, "UpdateContainer", req,
                                 nri.UpdateContainerResponse, p, c, fail=True)
        out = dict(resources)
        others = []
        for plugin, reply in answers:
            for u in reply.update:
                if u.container_id == ctr.id and u.HasField("linux"):
                    out.update(adjust.resource_update(u.linux.resources))
                else:
                    others.append(u)
            self._evict(plugin, list(reply.evict))
        self._apply_updates(None, others)
        return out

    def post_update_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        with self._lock:
            self._ctr_event(nri.POST_UPDATE_CONTAINER, "PostUpdateContainer",
                            nri.PostUpdateContainerRequest, nri.PostUpdateContainerResponse,
                            pod, ctr, fail=False)



def _in_use(path: str) -> bool:
    """True when something accepts connections on the unix socket at path."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _sync_chunks(pods: list[nri.PodSandbox], ctrs: list[nri.Container], limit: int
                 ) -> list[tuple[list[nri.PodSandbox], list[nri.Container]]]:
    """pods and containers cut into messages of about limit bytes (at least one message;
    pods first, so that a plugin knows a container's pod before the container)."""
    chunks: list[tuple[list[nri.PodSandbox], list[nri.Container]]] = [([], [])]
    size = 0
    for kind, items in ((0, pods), (1, ctrs)):
        for item in items:
            n = item.ByteSize() + 8
            if size + n > limit and (chunks[-1][0] or chunks[-1][1]):
                chunks.append(([], []))
                size = 0
            chunks[-1][kind].append(item)  # type: ignore[arg-type]
            size += n
    return chunks
