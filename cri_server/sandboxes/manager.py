"""SandboxManager: the life of a pod sandbox (RunPodSandbox .. RemovePodSandbox) and recovery.

RunPodSandbox, step by step (each step's crash point in CRASH_POINTS):
  record (CREATING, every path decided) -> pod files -> pod cgroup -> shim + pause-holder
  (via the zygote; namespaces pinned) -> CNI ADD -> READY.
A failure at any step undoes all of them (`_cleanup`); a crash leaves a CREATING
record that start-up recovery undoes the same way. kubelet retries (same request
while the first is in flight or done) get the first pod's id.

A pod's containers (PodContainers, the ContainerManager once cri_server.wiring has built
it) are stopped with the pod and removed with it.

When a READY pod's shim dies (kill -9; ShimWatch sees it), a successor shim takes the pod
back (`adopt_shim`: contract 1's spawn_shim in adopt mode, runtime.shim.adopt), in the
background under the pod lock, so it never races StopPodSandbox and never runs twice; the
pod stays READY meanwhile and turns NOTREADY only if the adoption fails. Start-up recovery
does the same for a READY pod whose shim is gone.
"""
from __future__ import annotations

import builtins
import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cni import CniManager
from cri_server import faults, host_features, systemd_units
from cri_server.config import Config
from cri_server.list_budget import ListBudget
from cri_server.list_cache import AnswerCache
from cri_server.nri.hooks import NO_NRI, NriHooks
from cri_server.paths import Paths
from cri_server.sandboxes import netns, pod_cgroup, pod_shm, podfiles, shim_process, validate
from cri_server.sandboxes.index import SandboxIndex
from cri_server.sandboxes.record import (
    CREATING,
    KIND,
    NOTREADY,
    READY,
    SandboxRecord,
    encode_config,
    request_digest,
)
from cri_server.sandboxes.shim_watch import ShimWatch
from cri_server.sandboxes.views import list_item_bytes, matches, pod_sandbox
from cri_server.store import Store
from proto import api_pb2
from pycri_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PycriError,
    Unavailable,
    Unimplemented,
)
from pycri_common.text import shorten
from runtime.pod_spec import IdMaps, PodCgroup, PodNamespaces, PodSpec
from runtime.shim import namespaces as shim_namespaces
from runtime.shim_client import ShimClient

log = logging.getLogger(__name__)

# Named points where PYCRI_CRASH_AT kills the daemon during RunPodSandbox (tests).
CRASH_POINTS = ("runp_record", "runp_files", "runp_cgroup", "runp_netns", "runp_shim",
                "runp_network", "runp_ready")
MAX_UNIX_SOCKET_PATH = 107
SHIM_SHUTDOWN_GRACE = 2.0
HELLO_TIMEOUT = 2.0
#: a failed adoption whose pod still lives (its pause-holder runs: the failure may pass, e.g.
#: a successor monitor out of fds or busy) is tried again after each of these delays (s); a
#: pod whose pause-holder is gone is NOTREADY at once (kubelet makes a new one)
ADOPT_RETRY_DELAYS = (0.5, 2.0)
RECOVERY_THREADS = 8


class PodContainers(Protocol):
    """What a pod needs of the container part (cri_server.containers.manager.ContainerManager)."""

    def stop_all_in_pod(self, pod_id: str, grace: float) -> None: ...

    def remove_all_in_pod(self, pod_id: str) -> None: ...


class NoContainers:
    """The container part of a SandboxManager used on its own: pods without containers."""

    def stop_all_in_pod(self, pod_id: str, grace: float) -> None:
        pass

    def remove_all_in_pod(self, pod_id: str) -> None:
        pass


@dataclass
class _Pending:
    """A RunPodSandbox in flight, for kubelet retries of the same request to wait on."""

    digest: str
    pod_id: str
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class SandboxManager:
    def __init__(self, config: Config, paths: Paths, store: Store, cni: CniManager | None,
                 spawn_shim: Callable[[PodSpec], dict[str, Any]],
                 shim_watch: ShimWatch | None = None,
                 adopt_shim: Callable[[PodSpec], dict[str, Any]] | None = None) -> None:
        self.config = config
        self.paths = paths
        self.store = store
        self.cni = cni
        self._spawn_shim = spawn_shim
        # The container part needs this manager first: the wiring sets it once it exists.
        self.containers: PodContainers = NoContainers()
        self._pending: dict[str, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._pod_locks: dict[str, threading.Lock] = {}
        self._pod_locks_guard = threading.Lock()
        # CNI ADD of each new pod runs here while its shim starts.
        self._network_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cni-add")
        # CNI DEL of each stopping pod runs here while its shim shuts down (a pool of its own:
        # a burst of ADDs must not hold a Stop back).
        self._teardown_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cni-del")
        # Pod lifecycle events (GetContainerEvents, with the pod id as container id, as
        # containerd sends them): set by the wiring; (CRI ContainerEventType, record).
        self.event_sink: Callable[[int, SandboxRecord], None] | None = None
        self._list_sizes: dict[str, int] = {}  # list_bytes: List item size by pod id
        # What the Lists may carry (cri_server.list_budget): set by the wiring.
        self.list_budget: ListBudget | None = None
        self.nri: NriHooks = NO_NRI  # NRI plugins (cri_server.nri): set by the wiring
        # Every record as last written, with its List item: what the Lists answer from.
        self._index = SandboxIndex(pod_sandbox)
        self._answer: AnswerCache[api_pb2.ListPodSandboxResponse] = AnswerCache(
            lambda: self._index.generation)
        # (generation, shim_watch.changes) at a List that found every pod settled: while
        # both hold, nothing a List shows can have changed (list_response)
        self._quiet_at: tuple[int, int] | None = None
        # Liveness of the pods' shims (pidfds): shared with the ContainerManager by the wiring.
        self.shim_watch = shim_watch if shim_watch is not None else ShimWatch()
        # A successor shim for a pod whose shim died (None: such a pod turns NOTREADY).
        self._adopt_shim = adopt_shim
        self._adopting: set[str] = set()   # pod ids with an adoption queued or running
        self._adopt_lock = threading.Lock()
        self._adopt_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="adopt")
        if adopt_shim is not None:
            self.shim_watch.on_dead = self._shim_died

    # -- lookups ---------------------------------------------------------------
    def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of a pod given its id or a unique prefix; NotFound otherwise."""
        if not id_or_prefix:
            raise InvalidArgument("pod sandbox id must not be empty")
        if self.store.get(KIND, id_or_prefix) is not None:
            return id_or_prefix
        matches = self.store.ids_with_prefix(KIND, id_or_prefix)
        if not matches:
            raise NotFound(f"pod sandbox {shorten(id_or_prefix)} does not exist")
        if len(matches) > 1:
            raise InvalidArgument(f"pod sandbox id prefix {shorten(id_or_prefix)} is ambiguous: it "
                                  f"matches {len(matches)} pods")
        return matches[0]

    def get(self, pod_id: str) -> SandboxRecord:
        """The record of a pod (id or unique prefix); NotFound if there is none."""
        full = self.resolve_id(pod_id)
        data = self.store.get(KIND, full)
        if data is None:
            raise NotFound(f"pod sandbox {shorten(pod_id)} does not exist")
        return self._refresh(SandboxRecord.from_json(data))

    def list(self) -> list[SandboxRecord]:
        """Every pod, from the in-memory index (shared records: read, do not change them);
        a READY pod whose shim is gone turns NOTREADY on the way."""
        self.shim_watch.poll()
        return [self._refresh(rec, polled=True) for rec in self._indexed()]

    def _indexed(self) -> builtins.list[SandboxRecord]:
        with self._index.lock:
            if not self._index.loaded:   # a manager used without recover() (tools, tests)
                self._index.load(SandboxRecord.from_json(d) for d in self.store.list(KIND))
            return self._index.records()

    def _refresh(self, rec: SandboxRecord, polled: bool = False) -> SandboxRecord:
        """A READY pod whose shim died is NOTREADY (its pidfd, or a /proc check; no socket
        round trip). `polled`: the caller has just run shim_watch.poll().

        Runs without the pod lock (List/PodSandboxStatus must not wait for a Stop): only the
        state field changes, and only if it is still READY, so a record StopPodSandbox saved
        meanwhile is never overwritten with this older copy."""
        if rec.state != READY:
            return rec
        if not polled:
            self.shim_watch.poll()
        if self.shim_watch.alive(rec.shim_dir, rec.shim_pid):
            return rec
        if self._request_adoption(rec.id):
            return rec   # READY while a successor shim takes the pod back
        return self._mark_notready(rec)

    def _mark_notready(self, rec: SandboxRecord) -> SandboxRecord:
        """rec (READY, its shim gone) turned NOTREADY, unless it changed meanwhile."""
        with self._index.lock:
            replaced = self.store.replace_field(KIND, rec.id, "state", READY, NOTREADY)
            if replaced:
                self._index.mark_notready(rec.id, READY, NOTREADY)
        if replaced:
            log.warning("the shim (pid %d) of pod sandbox %s is gone; marking it NOTREADY",
                        rec.shim_pid, rec.id)
            rec = SandboxRecord.from_json(rec.to_json())   # rec may be the index's copy
            rec.state = NOTREADY
            self._publish(api_pb2.CONTAINER_STOPPED_EVENT, rec)
            return rec
        data = self.store.get(KIND, rec.id)   # changed meanwhile (stopped, removed)
        if data is None:
            rec.state = NOTREADY
            return rec
        return SandboxRecord.from_json(data)

    # -- a successor shim for a pod whose shim died ----------------------------------
    def _shim_died(self, shim_dir: str) -> None:
        """ShimWatch saw the shim of shim_dir exit."""
        with self._index.lock:
            found = [r.id for r in self._index.records()
                     if r.shim_dir == shim_dir and r.state == READY]
        for pod_id in found:
            self._request_adoption(pod_id)

    def _request_adoption(self, pod_id: str, attempt: int = 0) -> bool:
        """Queues the adoption of pod_id by a successor shim (once: a request while one is
        queued or running is the same); False without an adopt_shim. `attempt` > 0: a retry,
        after its delay (ADOPT_RETRY_DELAYS)."""
        if self._adopt_shim is None:
            return False
        with self._adopt_lock:
            if pod_id in self._adopting:
                return True
            self._adopting.add(pod_id)
        if self._queue_adoption(pod_id, attempt):
            return True
        with self._adopt_lock:
            self._adopting.discard(pod_id)
        return False

    def _queue_adoption(self, pod_id: str, attempt: int) -> bool:
        """Runs _adopt_queued in the pool, now or (a retry) after its delay; False when the
        manager is closing."""
        def submit() -> bool:
            try:
                self._adopt_pool.submit(self._adopt_queued, pod_id, attempt)
                return True
            except RuntimeError:  # shutting down
                return False

        if attempt == 0:
            return submit()

        def later() -> None:
            if not submit():
                with self._adopt_lock:
                    self._adopting.discard(pod_id)

        timer = threading.Timer(ADOPT_RETRY_DELAYS[attempt - 1], later)
        timer.daemon = True
        timer.start()
        return True

    def _adopt_queued(self, pod_id: str, attempt: int = 0) -> None:
        retry = False
        try:
            with self._pod_lock(pod_id):
                data = self.store.get(KIND, pod_id)
                if data is None:
                    return   # removed meanwhile
                rec = SandboxRecord.from_json(data)
                self.shim_watch.poll()
                if rec.state != READY or self.shim_watch.alive(rec.shim_dir, rec.shim_pid):
                    return   # stopped meanwhile, or adopted already
                retry = self._adopt_locked(rec, attempt) is None
        except Exception:  # logged; the pod stays as it is
            log.exception("adopting pod sandbox %s failed", pod_id)
        finally:
            if not (retry and self._queue_adoption(pod_id, attempt + 1)):
                with self._adopt_lock:
                    self._adopting.discard(pod_id)

    def _adopt_locked(self, rec: SandboxRecord, attempt: int = 0) -> bool | None:
        """Under the pod lock, rec READY and its shim gone: a successor shim takes the pod
        back (runtime.shim.adopt). True when adopted; None when it failed but may work on a
        retry (attempt < len(ADOPT_RETRY_DELAYS) and the pod's pause-holder lives: the pod
        stays READY meanwhile); False when it failed for good: the pod turned NOTREADY, the
        reason in its record (PodSandboxStatus verbose info "adoptionError")."""
        assert self._adopt_shim is not None
        started = time.monotonic()
        try:
            try:   # a successor already serving (the daemon died after it was started)
                hello = ShimClient(rec.shim_dir).hello(timeout=HELLO_TIMEOUT)
                info: dict[str, Any] = ({"pid": hello.shim_pid, "pause_pid": hello.pause_pid}
                                        if hello.pod_id == rec.id else {})
            except PycriError:
                info = {}
            if not info:
                shim_process.kill_stale_shim(rec.shim_dir, rec.shim_pid)  # a hung one
                info = self._adopt_shim(self._pod_spec(rec))
        except PycriError as exc:
            gone = shim_process.pause_holder_gone(rec.shim_dir, rec.id, rec.pause_pid)
            if not gone and attempt < len(ADOPT_RETRY_DELAYS):
                log.warning("pod sandbox %s: adoption attempt %d failed (%s); trying again in "
                            "%.1f s", rec.id, attempt + 1, exc, ADOPT_RETRY_DELAYS[attempt])
                return None
            why = (f"{gone}: it cannot be taken back (kubelet recreates the pod)" if gone else
                   f"no successor monitor could take it back in {attempt + 1} attempts")
            log.warning("pod sandbox %s: %s (%s); marking it NOTREADY", rec.id, why, exc)
            self._mark_notready(rec)
            data = self.store.get(KIND, rec.id)   # under the pod lock: nobody else writes it
            if data is not None:
                failed = SandboxRecord.from_json(data)
                failed.adopt_error = f"{why}: {exc}"
                self._save(failed)
            return False
        rec.shim_pid = int(info.get("pid") or 0)
        rec.pause_pid = int(info.get("pause_pid") or rec.pause_pid or 0)
        rec.adopt_error = ""
        self._save(rec)
        self.shim_watch.alive(rec.shim_dir, rec.shim_pid)   # watched from now on
        log.warning("pod sandbox %s: its shim died; the successor shim (pid %d) took it back "
                    "in %.1f ms", rec.id, rec.shim_pid, (time.monotonic() - started) * 1000)
        return True

    def shim(self, pod_id: str) -> ShimClient:
        return ShimClient(self.get(pod_id).shim_dir)

    def cni_result(self, rec: SandboxRecord) -> dict[str, Any] | None:
        if rec.host_network or self.cni is None:
            return None
        result = self.cni.cached_result(rec.id)
        return result.raw if result is not None else None

    # -- RunPodSandbox ---------------------------------------------------------
    def run(self, request: api_pb2.RunPodSandboxRequest) -> str:
        plan = validate.plan(request, list(self.config.runtime.handlers),
                             podfiles.host_hostname())
        systemd_units.require(self.config.cgroup_driver)  # before anything is made
        if plan.userns:
            supported, reason = host_features.user_namespaces(str(self.paths.root),
                                                              str(self.paths.state))
            if not supported:
                raise Unimplemented(f"pods with their own user namespace (userns_options mode "
                                    f"POD) are not supported on this host: {reason}")
        digest = request_digest(request)
        while True:
            pending, existing = self._reserve(plan.name_key, digest)
            if pending is not None:
                break
            if existing is not None:
                return existing
        try:
            pending.pod_id = self._create(request, plan, digest, pending)
            return pending.pod_id
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._pending_lock:
                self._pending.pop(plan.name_key, None)
            pending.done.set()

    def _reserve(self, name_key: str, digest: str) -> tuple[_Pending | None, str | None]:
        """(our pending entry, None) when we create the pod; (None, id) for a retry of a pod
        that exists; (None, None) to try again (the first attempt failed)."""
        with self._pending_lock:
            other = self._pending.get(name_key)
            if other is None:
                data = self.store.find_by_name(KIND, name_key)
                if data is None:
                    pending = _Pending(digest, "")
                    self._pending[name_key] = pending
                    return pending, None
                rec = SandboxRecord.from_json(data)
                if rec.request_digest == digest and rec.state == READY:
                    log.info("RunPodSandbox retry for %s: returning existing pod %s", name_key,
                             rec.id)
                    return None, rec.id
                raise AlreadyExists(
                    f"pod name {shorten(name_key)} is reserved by pod sandbox {rec.id} "
                    f"(state {rec.state}); remove it first")
            if other.digest != digest:
                raise AlreadyExists(f"pod name {shorten(name_key)} is reserved by a pod sandbox "
                                    "that is being created with a different configuration")
        log.info("RunPodSandbox retry for %s: waiting for the first attempt", name_key)
        other.done.wait()
        if other.error is None:
            return None, other.pod_id
        return None, None

    def _new_record(self, request: api_pb2.RunPodSandboxRequest, plan: validate.SandboxPlan,
                    digest: str) -> SandboxRecord:
        pod_id = secrets.token_hex(32)
        config = request.config
        cg = pod_cgroup.plan(self.config.cgroup_driver, config.linux.cgroup_parent,
                             self.config.cgroup_parent, pod_id)
        shim_dir = self.paths.shim_dir(pod_id)
        if len(str(shim_dir / "shim.sock").encode()) > MAX_UNIX_SOCKET_PATH:
            shim_dir = self.paths.shim_dir(pod_id[:32])  # long state dirs (tests)
        return SandboxRecord(
            id=pod_id, name_key=plan.name_key, created_at=time.time_ns(), state=CREATING,
            phase="record", config_b64=encode_config(config), request_digest=digest,
            runtime_handler=plan.runtime_handler, namespaces=dict(plan.namespaces),
            hostname=plan.hostname, sysctls=dict(plan.sysctls),
            port_mappings=list(plan.port_mappings), pod_dir=str(self.paths.pod_dir(pod_id)),
            shim_dir=str(shim_dir), ns_dir=str(self.paths.ns_dir(pod_id)),
            netns_path="" if plan.host_network else str(self.paths.netns_path(pod_id)),
            cgroup_driver=cg.driver, cgroup_parent=cg.parent, cgroup_path=cg.path,
            cgroup_owned=cg.owned, cgroup_prune_to=cg.prune_to,
            shm_path=("" if plan.namespaces.get("ipc") == "node"
                      else pod_shm.shm_path(self.paths.state, pod_id)),
            userns=dict(plan.userns))

    def _create(self, request: api_pb2.RunPodSandboxRequest, plan: validate.SandboxPlan,
                digest: str, pending: _Pending) -> str:
        started = time.monotonic()
        rec = self._new_record(request, plan, digest)
        pending.pod_id = rec.id
        item_bytes = list_item_bytes(rec)
        with (self.list_budget.admit(f"pod sandbox {shorten(plan.name_key)}", item_bytes)
              if self.list_budget is not None else contextlib.nullcontext()):
            with self._index.lock:
                self.store.insert(KIND, rec.id, rec.name_key, rec.to_json())
                self._index.put(rec)
        faults.crash_point("runp_record")
        try:
            with self._pod_lock(rec.id):
                self._build(rec, request.config)
        except BaseException as exc:
            log.warning("RunPodSandbox %s failed, undoing it: %s", rec.id, exc)
            self._undo_half_made(rec)
            raise
        log.info("pod sandbox %s (%s) ready in %.1f ms, ip %s", rec.id, rec.name_key,
                 (time.monotonic() - started) * 1000, rec.ip or "-")
        self._publish(api_pb2.CONTAINER_CREATED_EVENT, rec)
        self._publish(api_pb2.CONTAINER_STARTED_EVENT, rec)
        return rec.id

    def _build(self, rec: SandboxRecord, config: api_pb2.PodSandboxConfig) -> None:
        times = [time.monotonic()]
        pod_dir = Path(rec.pod_dir)
        podfiles.write_pod_files(pod_dir, rec.hostname, config.dns_config, rec.host_network)
        if rec.shm_path:
            pod_shm.create(rec.shm_path)
        self._save(rec, phase="files")
        faults.crash_point("runp_files")
        times.append(time.monotonic())

        pod_cgroup.create(self._cgroup(rec), pod_cgroup.pod_resources(config.linux))
        self._save(rec, phase="cgroup")
        faults.crash_point("runp_cgroup")
        times.append(time.monotonic())

        network: Future[Any] | None = None
        # A pod user namespace must own the network namespace: the shim makes both (the
        # daemon's threads cannot enter a new user namespace) and CNI runs once it is up.
        if not rec.host_network and not rec.userns:
            netns.create(rec.netns_path)
            self._save(rec, phase="netns")
            faults.crash_point("runp_netns")
            # CNI ADD and the shim's start are most of RunPodSandbox: run them side by side.
            network = self._network_pool.submit(self._setup_network, rec, config)
        try:
            self._start_shim(rec)
        except BaseException:
            # An ADD still running would allocate the pod's IP after the clean-up looked for
            # CNI state (and found none yet): let it finish, so that the clean-up DELs it.
            if network is not None:
                wait([network])
            raise
        times.append(time.monotonic())
        if not rec.host_network and rec.userns:
            network = self._network_pool.submit(self._setup_network, rec, config)

        if network is not None:
            result = network.result()
            rec.ip = result.primary_ip or ""
            rec.additional_ips = [ip for ip in result.ips if ip != rec.ip]
            rec.network_ready = True
            self._save(rec, phase="network")
            faults.crash_point("runp_network")
            podfiles.write_hosts_with_ips(pod_dir, rec.hostname, result.ips)

        self.nri.run_pod_sandbox(rec)  # NRI plugins; the pod is not listed until READY
        rec.state = READY
        self._save(rec, phase="ready")
        faults.crash_point("runp_ready")
        times.append(time.monotonic())
        steps = ("files", "cgroup", "shim", "network")
        log.debug("pod sandbox %s built: %s", rec.id, ", ".join(
            f"{name} {(b - a) * 1000:.1f} ms" for name, a, b in zip(steps, times, times[1:], strict=False)))

    def _start_shim(self, rec: SandboxRecord) -> None:
        """The pod's shim and pause-holder (and, systemd driver, the pause-holder's scope)."""
        info = self._spawn_shim(self._pod_spec(rec))
        rec.shim_pid = int(info.get("pid") or 0)
        rec.pause_pid = int(info.get("pause_pid") or 0)
        rec.ns_paths = dict(info.get("ns") or {})
        self._save(rec, phase="shim")
        self.shim_watch.alive(rec.shim_dir, rec.shim_pid)  # watched: its death is noticed
        pod_cgroup.start_pause_scope(self._cgroup(rec), rec.id, rec.pause_pid)
        faults.crash_point("runp_shim")

    def _setup_network(self, rec: SandboxRecord, config: api_pb2.PodSandboxConfig) -> Any:
        if self.cni is None:
            raise FailedPrecondition("pod networking is not available (CNI not initialised)")
        meta = config.metadata
        try:
            return self.cni.setup(rec.id, rec.netns_path,
                                  {"name": meta.name, "namespace": meta.namespace,
                                   "uid": meta.uid}, rec.port_mappings)
        except PycriError:
            raise
        except Exception as exc:
            raise Unavailable(f"setting up the network of pod {rec.id} failed: {exc}") from exc

    def _pod_spec(self, rec: SandboxRecord) -> PodSpec:
        """The PodSpec (contract 2 of docs/architecture.md); the zygote parses what it gets."""
        return PodSpec(
            pod_id=rec.id, hostname=rec.hostname,
            namespaces=PodNamespaces.from_json(rec.namespaces), sysctls=dict(rec.sysctls),
            shim_dir=rec.shim_dir, ns_dir=rec.ns_dir, netns_path=rec.netns_path or "",
            cgroup=PodCgroup(driver=rec.cgroup_driver, parent=rec.cgroup_parent,
                             path=rec.cgroup_path),
            log_level=self.config.log_level,
            userns=(IdMaps(uid_map=tuple((c, h, n) for c, h, n in rec.userns["uids"]),
                           gid_map=tuple((c, h, n) for c, h, n in rec.userns["gids"]))
                    if rec.userns else None))

    # -- StopPodSandbox --------------------------------------------------------
    def stop(self, pod_id: str) -> None:
        """Stops a pod; stopping a stopped or unknown pod is not an error (kubelet, critest)."""
        try:
            rec = self.get(pod_id)
        except NotFound:
            log.info("StopPodSandbox: pod sandbox %r does not exist; nothing to stop", pod_id)
            return
        with self._pod_lock(rec.id):
            data = self.store.get(KIND, rec.id)
            if data is None:
                return  # removed meanwhile
            rec = self._refresh(SandboxRecord.from_json(data))
            if rec.state == CREATING:
                raise FailedPrecondition(f"pod sandbox {rec.id} is still being created")
            self._stop_locked(rec)

    def _stop_locked(self, rec: SandboxRecord) -> None:
        t0 = time.monotonic()
        self.containers.stop_all_in_pod(rec.id, self.config.runtime.stop_grace_seconds)
        self._notify_nri(self.nri.stop_pod_sandbox, rec)
        t1 = time.monotonic()
        # CNI DEL (plugin execs, and the kernel removing the pod's interfaces) is most of a
        # Stop: it runs beside the shim's shutdown, which needs none of it (the netns stays
        # pinned until both are done). Both are done before Stop returns, as kubelet expects;
        # a failed DEL fails the Stop (kubelet retries; every step here is idempotent).
        network: Future[float] | None = None
        if rec.network_ready or self._has_cni_state(rec):
            network = self._teardown_pool.submit(self._timed_teardown, rec)
        try:
            self._stop_shim(rec)
        finally:
            if network is not None:
                wait([network])
        t2 = time.monotonic()
        del_ms = 0.0
        if network is not None:
            del_ms = network.result()
            rec.network_ready = False
            self._save(rec)
        netns.remove(rec.netns_path)
        pod_shm.remove(rec.shm_path)
        if rec.state != NOTREADY:
            rec.state = NOTREADY
            self._save(rec)
        self._publish(api_pb2.CONTAINER_STOPPED_EVENT, rec)  # repeats are dropped by the sink
        log.debug("pod sandbox %s stopped: containers %.1f ms, shim and network %.1f ms "
                  "(CNI DEL %.1f ms), rest %.1f ms", rec.id, (t1 - t0) * 1000, (t2 - t1) * 1000,
                  del_ms, (time.monotonic() - t2) * 1000)

    def _timed_teardown(self, rec: SandboxRecord) -> float:
        started = time.monotonic()
        self._teardown_network(rec, force=False)
        return (time.monotonic() - started) * 1000

    def _has_cni_state(self, rec: SandboxRecord) -> bool:
        return (not rec.host_network and self.cni is not None
                and rec.id in self.cni.cached_pod_ids())

    def _teardown_network(self, rec: SandboxRecord, force: bool) -> None:
        if rec.host_network or self.cni is None:
            return
        meta = rec.metadata
        self.cni.teardown(rec.id, rec.netns_path or None,
                          {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
                          rec.port_mappings, force=force)

    def _stop_shim(self, rec: SandboxRecord) -> None:
        client = ShimClient(rec.shim_dir)
        try:
            client.shutdown(grace=SHIM_SHUTDOWN_GRACE)
        except PycriError as exc:
            log.info("shim of pod %s did not shut down cleanly (%s); killing it", rec.id, exc)
        shim_process.kill_stale_shim(rec.shim_dir, rec.shim_pid)
        shim_process.kill_pod_processes(rec.shim_dir, rec.pause_pid)  # outlive a dead shim
        shim_namespaces.unpin_all(rec.ns_dir)
        self.shim_watch.forget(rec.shim_dir)

    # -- RemovePodSandbox ------------------------------------------------------
    def remove(self, pod_id: str) -> None:
        """Removes a pod and everything it owns; an unknown id is not an error."""
        try:
            rec = self.get(pod_id)
        except NotFound:
            return
        with self._pod_lock(rec.id):
            data = self.store.get(KIND, rec.id)
            if data is None:
                return
            rec = SandboxRecord.from_json(data)
            if rec.state == CREATING:
                raise FailedPrecondition(f"pod sandbox {rec.id} is still being created")
            self._stop_locked(rec)
            self.containers.remove_all_in_pod(rec.id)
            self._remove_files(rec)
            self._delete(rec)
        with self._pod_locks_guard:
            self._pod_locks.pop(rec.id, None)
        self._publish(api_pb2.CONTAINER_DELETED_EVENT, rec)
        self._notify_nri(self.nri.remove_pod_sandbox, rec)
        log.info("pod sandbox %s removed", rec.id)

    @staticmethod
    def _notify_nri(hook: Callable[[SandboxRecord], None], rec: SandboxRecord) -> None:
        try:
            hook(rec)
        except Exception:
            log.exception("NRI notification for pod sandbox %s", rec.id[:12])

    def _publish(self, event_type: int, rec: SandboxRecord) -> None:
        if self.event_sink is None:
            return
        try:
            self.event_sink(event_type, rec)
        except Exception:
            log.exception("publishing pod sandbox event")

    def _remove_files(self, rec: SandboxRecord) -> None:
        try:
            pod_cgroup.remove(self._cgroup(rec), rec.id)
        except OSError as exc:
            raise FailedPrecondition(f"cannot remove the cgroup {rec.cgroup_path} of pod "
                                     f"{rec.id}: {exc.strerror}") from None
        shutil.rmtree(rec.pod_dir, ignore_errors=True)
        shutil.rmtree(rec.shim_dir, ignore_errors=True)

    # -- clean-up of a half-made pod (failed RunPodSandbox, crash) -------------------
    def _cleanup(self, rec: SandboxRecord) -> None:
        """Undoes every step of RunPodSandbox, whichever were done; idempotent."""
        if rec.network_ready or self._has_cni_state(rec):
            try:
                self._teardown_network(rec, force=True)
            except PycriError as exc:
                log.warning("CNI teardown of half-made pod %s: %s", rec.id, exc)
        self._stop_shim(rec)
        netns.remove(rec.netns_path)
        pod_shm.remove(rec.shm_path)
        self._remove_files(rec)

    def _undo_half_made(self, rec: SandboxRecord) -> None:
        """Undoes a pod RunPodSandbox did not finish and deletes its record. If the undo fails
        the pod is left NOTREADY, not CREATING: Stop/RemovePodSandbox refuse a pod being
        created, so it (and its name) would be stuck until the next start."""
        try:
            self._cleanup(rec)
        except Exception:
            log.exception("undoing half-made pod %s failed; RemovePodSandbox retries it", rec.id)
            rec.state = NOTREADY
            self._save(rec)
            return
        self._delete(rec)
        with self._pod_locks_guard:  # kubelet retries failing pods for ever
            self._pod_locks.pop(rec.id, None)

    # -- recovery --------------------------------------------------------------
    def recover(self) -> None:
        """After a (re)start: READY pods whose shim is gone become NOTREADY, half-made pods are
        undone, and leftovers without a record (shim dirs, pinned namespaces, CNI cache) go."""
        def one(rec: SandboxRecord) -> None:
            try:
                self._recover_one(rec)
            except Exception:  # one bad pod must not stop the daemon
                log.exception("recovering pod sandbox %s failed", rec.id)

        records = [SandboxRecord.from_json(d) for d in self.store.list(KIND)]
        self._index.load(records)
        with ThreadPoolExecutor(max_workers=RECOVERY_THREADS) as pool:  # hung shims time out
            list(pool.map(one, records))                                 # side by side
        self._collect_orphans({r.id for r in self.list()})
        if self._adopt_shim is not None:
            self.shim_watch.start_death_watch()   # a shim's death is noticed at once

    def close(self) -> None:
        """Stops noticing shim deaths and waits for adoptions in flight."""
        self.shim_watch.stop_death_watch()
        self._adopt_pool.shutdown(wait=True, cancel_futures=True)

    def _recover_one(self, rec: SandboxRecord) -> None:
        if rec.state == CREATING:
            log.info("pod sandbox %s was being created when pycri stopped; undoing it", rec.id)
            self._undo_half_made(rec)
            return
        if rec.state == READY and not self._shim_alive(rec):
            if self._adopt_shim is not None:
                with self._pod_lock(rec.id):
                    if self._adopt_locked(rec) is None:   # stays READY until the retry
                        self._request_adoption(rec.id, attempt=1)
                return
            log.warning("the shim of pod sandbox %s is gone; marking it NOTREADY", rec.id)
            rec.state = NOTREADY
            self._save(rec)

    def _shim_alive(self, rec: SandboxRecord) -> bool:
        try:
            hello = ShimClient(rec.shim_dir).hello(timeout=HELLO_TIMEOUT)
        except PycriError:
            return False
        return hello.pod_id == rec.id and hello.pause_alive

    def _collect_orphans(self, known: set[str]) -> None:
        for base in (self.paths.shims_dir, self.paths.ns_root, self.paths.netns_root):
            try:
                names = os.listdir(base)
            except FileNotFoundError:
                continue
            for name in names:
                if any(pid.startswith(name) for pid in known):
                    continue
                path = base / name
                log.info("removing leftover %s", path)
                if base == self.paths.shims_dir:
                    try:
                        ShimClient(str(path)).shutdown(grace=0)
                    except PycriError:
                        pass
                    shim_process.kill_stale_shim(str(path))
                    shim_process.kill_pod_processes(str(path))
                    shutil.rmtree(path, ignore_errors=True)
                elif base == self.paths.netns_root:
                    netns.remove(str(path))
                else:
                    shim_namespaces.unpin_all(str(path))
        pod_shm.collect_orphans(self.paths.state, known)
        if self.cni is not None:
            for pod_id in self.cni.cached_pod_ids() - known:
                log.info("tearing down the network of unknown pod %s", pod_id)
                try:
                    self.cni.teardown(pod_id, None, force=True)
                except Exception:
                    log.exception("CNI teardown of unknown pod %s failed", pod_id)

    # -- UpdatePodSandboxResources ----------------------------------------------
    def update_resources(self, pod_id: str, linux: api_pb2.LinuxPodSandboxConfig) -> None:
        """Applies new pod resources (plus overhead) to a pod cgroup pycri owns. A pod cgroup
        named by kubelet (cgroup_parent) is kubelet's: it resizes it itself and this call is
        only a notification, as in containerd (which hands it to NRI plugins)."""
        rec = self.get(pod_id)
        if rec.state == CREATING:
            raise FailedPrecondition(f"pod sandbox {rec.id} is still being created")
        self.nri.update_pod_sandbox(rec, linux)  # a plugin's error fails the update
        res = pod_cgroup.pod_resources(linux)
        if rec.cgroup_owned and res:
            pod_cgroup.update(self._cgroup(rec), res)
        self._notify_nri(self.nri.post_update_pod_sandbox, rec)

    # -- helpers ---------------------------------------------------------------
    def _cgroup(self, rec: SandboxRecord) -> pod_cgroup.PodCgroup:
        return pod_cgroup.PodCgroup(rec.cgroup_driver, rec.cgroup_parent, rec.cgroup_path,
                                    rec.cgroup_owned, rec.cgroup_prune_to)

    def _save(self, rec: SandboxRecord, phase: str | None = None) -> None:
        if phase is not None:
            rec.phase = phase
        with self._index.lock:   # the store and the index change together
            self.store.update(KIND, rec.id, rec.to_json())
            self._index.put(rec)

    def _delete(self, rec: SandboxRecord) -> None:
        with self._index.lock:
            self.store.delete(KIND, rec.id)
            self._index.drop(rec.id)
        self.shim_watch.forget(rec.shim_dir)

    @contextmanager
    def while_ready(self, pod_id: str) -> Iterator[SandboxRecord]:
        """Keeps Stop/RemovePodSandbox of a READY pod waiting while the caller adds to it (a
        container made in a pod being removed would outlive it); FailedPrecondition if the
        pod is not ready, NotFound if it is gone."""
        with self._pod_lock(pod_id):
            data = self.store.get(KIND, pod_id)
            if data is None:
                raise NotFound(f"pod sandbox {shorten(pod_id)} does not exist")
            rec = self._refresh(SandboxRecord.from_json(data))
            if rec.state != READY:
                raise FailedPrecondition(f"pod sandbox {pod_id} is not ready ({rec.state}); "
                                         "containers can be created only in a ready pod")
            yield rec

    @contextmanager
    def _pod_lock(self, pod_id: str) -> Iterator[None]:
        with self._pod_locks_guard:
            lock = self._pod_locks.setdefault(pod_id, threading.Lock())
        with lock:
            yield

    def list_bytes(self) -> int:
        """What the PodSandbox items of every pod take in a List (cri_server.list_budget)."""
        # Sizes are remembered by id (an indexed id-only query, not every record parsed): labels and
        # annotations never change, and a state change adds only a few bytes.
        sizes: dict[str, int] = {}
        for pod_id in self.store.ids_with_prefix(KIND, ""):
            size = self._list_sizes.get(pod_id)
            if size is None:
                data = self.store.get(KIND, pod_id)
                size = list_item_bytes(SandboxRecord.from_json(data)) if data is not None else 0
            sizes[pod_id] = size
        self._list_sizes = sizes
        return sum(sizes.values())

    def iter_records(self, flt: api_pb2.PodSandboxFilter | None) -> Iterator[SandboxRecord]:
        for rec in self.list():
            if rec.state != CREATING and matches(rec, flt):
                yield rec

    def list_items(self, flt: api_pb2.PodSandboxFilter | None
                   ) -> builtins.list[api_pb2.PodSandbox]:
        """ListPodSandbox: the PodSandbox items of the pods flt selects, oldest first; each
        item is built once per version of its record (SandboxIndex)."""
        recs = sorted(self.iter_records(flt), key=lambda r: r.created_at)
        return [self._index.item(r) for r in recs]

    def list_response(self, flt: api_pb2.PodSandboxFilter | None
                      ) -> api_pb2.ListPodSandboxResponse:
        """ListPodSandbox's answer; without a filter the same message while no pod changed
        (list_cache.AnswerCache: shared, never to be changed by the caller). An unfiltered
        List that finds nothing new (no record written, no change seen by the shim watch
        since a List that found every READY pod's shim held by a live pidfd) answers from
        the cache without looking at each pod."""
        if flt is not None:
            return api_pb2.ListPodSandboxResponse(items=self.list_items(flt))
        self.shim_watch.poll()
        before = self._index.generation
        quiet = (before, self.shim_watch.changes)
        if quiet == self._quiet_at:
            cached = self._answer.cached(before)
            if cached is not None:
                return cached
        # pods whose shim died turn NOTREADY on the way
        recs = [r for r in (self._refresh(x, polled=True) for x in self._indexed())
                if r.state != CREATING]
        settled = all(r.state != READY or self.shim_watch.watched_alive(r.shim_dir)
                      for r in recs)
        self._quiet_at = quiet if settled else None
        return self._answer.answer(before, lambda: api_pb2.ListPodSandboxResponse(
            items=[self._index.item(r) for r in sorted(recs, key=lambda r: r.created_at)]))
