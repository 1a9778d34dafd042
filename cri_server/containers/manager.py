"""ContainerManager: the container lifecycle behind the CRI container RPCs.

Records live in memory (write-through to the sqlite store, kind "container").
The runtime state comes from the pod's shim: its status files
(<shim_dir>/containers/<cid>.json, written on create/start/exit) are read when
they change, and a dead shim turns its containers EXITED (exit code 255, reason
Error). A monitor thread refreshes running containers once a second so exits are
noticed (and published as CONTAINER_STOPPED events) without a client asking. Lists
learn of shim deaths from pidfds (ShimWatch) and of status file writes from inotify
(StatusWatch), so they touch only what changed; each Container item is cached until
the record is next saved (ItemCache).

Create reserves the name (pod/name/attempt) by inserting a CREATING record before
any side effect; a daemon killed mid-create leaves that record, and recovery
deletes whatever it had made. A kubelet retry of the same request (same
fingerprint) waits for the first call and gets the same container.
"""
from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cri_server import faults, labels, systemd_units
from cri_server.cdi import names as cdi_names
from cri_server.cdi.registry import Registry, Resolved
from cri_server.containers import convert, exec_sync, spec_builder
from cri_server.containers import record as R
from cri_server.containers.collaborators import ImageLookup, PodLookup
from cri_server.containers.command import check_argv
from cri_server.containers.image_config import ImageView, cri_signal_number, parse_stop_signal
from cri_server.containers.pod_view import PodView, from_sandbox
from cri_server.containers.record import ContainerRecord
from cri_server.containers.status_watch import StatusWatch
from cri_server.list_budget import ListBudget
from cri_server.list_cache import AnswerCache, ItemCache
from cri_server.nri.hooks import NO_NRI, NriHooks
from cri_server.paths import Paths
from cri_server.sandboxes.shim_watch import ShimWatch
from cri_server.store import Store
from imageservice.metadata import ImageRecord
from proto import api_pb2
from pycri_common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PycriError,
    Unavailable,
)
from pycri_common.text import shorten
from runtime import arglimits, cgroups, hooks, keeper, resctrl, shim_client
from runtime.shim import statusfile
from runtime.shim.protocol import ContainerState
from runtime.shim_client import ShimClient

log = logging.getLogger(__name__)

KILL_WAIT_SECONDS = 30.0
MONITOR_INTERVAL = 1.0

EventSink = Callable[[int, ContainerRecord], None]


def _driver(rec: ContainerRecord) -> str:
    cg = rec.spec.get("cgroup") if rec.spec else None
    return str((cg or {}).get("driver") or "cgroupfs")


def _systemd_scope(spec: Any) -> contextlib.AbstractContextManager[None]:
    """systemd driver: the container's scope exists (with a placeholder) while the shim creates
    the container, so that the init joins a unit systemd knows (cri_server.systemd_units)."""
    cg = spec.cgroup
    if cg is None or cg.driver != "systemd":
        return contextlib.nullcontext()
    return systemd_units.container_scope(cg.path, spec.id, cg.resources.to_json())


def _fingerprint(request: api_pb2.CreateContainerRequest) -> str:
    h = hashlib.sha256(request.pod_sandbox_id.encode() + b"\0")
    h.update(request.config.SerializeToString(deterministic=True))
    return h.hexdigest()


class ContainerManager:
    def __init__(self, store: Store, paths: Paths, sandboxes: PodLookup, images: ImageLookup,
                 event_sink: EventSink | None = None, shim_watch: ShimWatch | None = None
                 ) -> None:
        self.store = store
        self.paths = paths
        self.sandboxes = sandboxes
        self.images = images
        self.event_sink = event_sink
        self._lock = threading.RLock()           # records, inflight, locks maps
        self._records: dict[str, ContainerRecord] = {}
        self._inflight: dict[str, tuple[str, Future[str]]] = {}
        self._ctr_locks: dict[str, threading.Lock] = {}
        self._status_versions: dict[str, tuple[int, int, int]] = {}
        self._status_paths: dict[str, str] = {}    # container id -> its shim status file
        # Status files written since a container's last read (inotify), so that a List stats
        # only those: drain number at which each id last changed / at which it was last read.
        self._status_watch = StatusWatch()
        self._drains = 0
        self._changed_at: dict[str, int] = {}
        self._all_changed_at = 0
        self._read_at: dict[str, int] = {}
        self._news = 0   # drains that brought a status file write (or an inotify overflow)
        # (generation, _news, shim_watch.changes) at a List that found every container
        # settled: while all three hold, nothing a List shows can have changed (list_response)
        self._quiet_at: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._list_sizes: dict[str, int] = {}  # list_bytes: List item size by container id
        # What the Lists may carry (cri_server.list_budget): set by the wiring.
        self.list_budget: ListBudget | None = None
        # Liveness of the pods' shims (pidfds; the SandboxManager's, shared by the wiring).
        self.shim_watch = shim_watch if shim_watch is not None else ShimWatch()
        # Each container's List item, rebuilt after each write of its record (_save).
        self._items: ItemCache[ContainerRecord, api_pb2.Container] = ItemCache(convert.container)
        self._answer: AnswerCache[api_pb2.ListContainersResponse] = AnswerCache(
            lambda: self._items.generation)
        # The CDI registry (cri_server.cdi): set by the wiring; None = no CDI devices at all.
        self.cdi: Registry | None = None
        self.nri: NriHooks = NO_NRI  # NRI plugins (cri_server.nri): set by the wiring

    # ------------------------------------------------------------------ lookup
    def _ctr_lock(self, cid: str) -> threading.Lock:
        with self._lock:
            return self._ctr_locks.setdefault(cid, threading.Lock())

    def get(self, container_id: str) -> ContainerRecord:
        """The record with this id or unique id prefix; NotFound otherwise."""
        if not container_id:
            raise InvalidArgument("container id is empty")
        with self._lock:
            rec = self._records.get(container_id)
            if rec is None:
                found = [r for cid, r in self._records.items() if cid.startswith(container_id)]
                if len(found) > 1:
                    raise InvalidArgument(f"container id prefix {shorten(container_id)} is ambiguous")
                rec = found[0] if found else None
        if rec is None or rec.state == R.CREATING:
            raise NotFound(f"container {shorten(container_id)} not found")
        return rec

    def _pod(self, pod_id: str) -> PodView:
        if not pod_id:
            raise InvalidArgument("pod_sandbox_id is empty")
        try:
            rec = self.sandboxes.get(pod_id)
        except NotFound:
            raise NotFound(f"pod sandbox {shorten(pod_id)} not found") from None
        return from_sandbox(rec)

    def _resolve_image(self, ref: str) -> ImageRecord:
        if not ref:
            raise InvalidArgument("container config has no image")
        img = self.images.resolve(ref)
        if img is None:
            raise NotFound(f"image {shorten(ref)} not found; pull it first")
        return img

    def _image_view(self, img: ImageRecord) -> ImageView:
        """Config and layers of a resolved image (NotFound if it was removed meanwhile)."""
        cfg = self.images.image_config(img.id)
        return ImageView.from_config(img.id, img.repo_digests[0] if img.repo_digests else "",
                                     self.images.rootfs_layers(img.id),
                                     cfg.raw.get("config") or {})

    # ------------------------------------------------------------------ create
    def create(self, request: api_pb2.CreateContainerRequest) -> str:
        config = request.config
        if not config.HasField("metadata") or not config.metadata.name:
            raise InvalidArgument("container config needs metadata.name")
        labels.check_labels("ContainerConfig.labels", config.labels)
        labels.check_annotations("ContainerConfig.annotations", config.annotations)
        labels.check_annotations("ContainerConfig.image.annotations", config.image.annotations)
        pod = self._pod(request.pod_sandbox_id)
        key = R.name_key(pod.id, config.metadata.name, config.metadata.attempt)
        fp = _fingerprint(request)
        with self._lock:
            inflight = self._inflight.get(key)
            if inflight is None:
                existing = next((r for r in self._records.values() if r.name_key == key), None)
                if existing is not None:
                    if existing.fingerprint == fp and existing.state != R.CREATING:
                        return existing.id  # kubelet retry after the first call finished
                    raise AlreadyExists(f"container name {shorten(key)} is reserved by "
                                        f"container {existing.id}")
                future: Future[str] = Future()
                self._inflight[key] = (fp, future)
        if inflight is not None:
            if inflight[0] != fp:
                raise AlreadyExists(f"container name {shorten(key)} is being created by another "
                                    "request with a different config")
            return inflight[1].result()
        try:
            cid = self._create(request, pod, key, fp)
            future.set_result(cid)
            return cid
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)

    def _create(self, request: api_pb2.CreateContainerRequest, pod: PodView, key: str,
                fp: str) -> str:
        t_start = time.monotonic()
        config = request.config
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready ({pod.state}); "
                                     "containers can be created only in a ready pod")
        img = self._resolve_image(config.image.image)
        cdi_devices = self._cdi_devices(config)  # before anything exists: nothing to undo
        cid = secrets.token_hex(32)
        if config.stop_signal not in api_pb2.Signal.values():
            raise InvalidArgument(f"stop_signal {config.stop_signal} is not a CRI Signal value")
        kill_signal = (cri_signal_number(api_pb2.Signal.Name(config.stop_signal))
                       if config.stop_signal else int(signal.SIGTERM))
        rec = ContainerRecord(
            id=cid, pod_id=pod.id, name=config.metadata.name, attempt=config.metadata.attempt,
            image=config.image.image, user_specified_image=config.image.user_specified_image,
            image_annotations=dict(config.image.annotations), image_id=img.id,
            image_ref=_repo_digest(config.image.image, img), labels=dict(config.labels),
            annotations=dict(config.annotations),
            mounts=[{"container_path": m.container_path, "host_path": m.host_path,
                     "readonly": m.readonly, "selinux_relabel": m.selinux_relabel,
                     "propagation": int(m.propagation),
                     "recursive_read_only": m.recursive_read_only,
                     "image": m.image.image if m.HasField("image") else "",
                     "image_sub_path": m.image_sub_path}
                    for m in config.mounts],
            stop_signal=int(config.stop_signal), kill_signal=kill_signal,
            tty=config.tty, stdin=config.stdin, stdin_once=config.stdin_once,
            fingerprint=fp, shim_dir=pod.shim_dir, state=R.CREATING,
            created_at=time.time_ns())
        # The record reserves the name and, from now on, keeps the image from being removed.
        item_bytes = convert.container(rec).ByteSize()
        with (self.list_budget.admit(f"container {shorten(key)}", item_bytes)
              if self.list_budget is not None else contextlib.nullcontext()):
            self.store.insert(R.KIND, cid, key, rec.to_json_text())
            with self._lock:
                self._records[cid] = rec
        faults.crash_point("container_create_reserved")
        shim: ShimClient | None = None
        created_in_shim = False
        nri_pod = None  # set once NRI plugins have seen the container

        def volume_layers(ref: str) -> list[str]:
            """An image volume's layers; from now on the record keeps that image in use."""
            vol = self._resolve_image(ref)
            with self._lock:
                rec.volume_image_ids.append(vol.id)
            for entry in rec.mounts:
                if entry.get("image") == ref and not entry.get("image_ref"):
                    entry["image_ref"] = vol.id
                    break
            return self._image_view(vol).lower_dirs

        try:
            image = self._image_view(img)
            if not config.stop_signal:
                rec.kill_signal = parse_stop_signal(image.stop_signal)
            cdir = str(self.paths.container_dir(cid))
            os.makedirs(cdir, mode=0o711)
            dirs = spec_builder.container_dirs(cdir)
            os.mkdir(dirs.upper, 0o755)
            os.mkdir(dirs.work, 0o700)
            spec = spec_builder.build(cid, request, pod, image, dirs,
                                      target_pid_ns=lambda t: self._target_pid_ns(pod.id, t),
                                      image_layers=volume_layers, cdi_devices=cdi_devices)
            pod_rec = self.sandboxes.get(pod.id)
            spec = self.nri.create_container(pod_rec, rec, spec)  # plugins adjust the spec
            nri_pod = pod_rec
            spec_json = spec.to_json()
            rec.resources = spec.cgroup.resources.to_json() if spec.cgroup else {}
            rec.log_path = spec.log_path or ""  # the shim creates it, never via symlinks
            rec.spec = _storable_spec(spec_json)
            shim = ShimClient(pod.shim_dir)
            with self._pod_ready(pod.id):  # no Stop/RemovePodSandbox of the pod meanwhile
                t_spec = time.monotonic()
                with _systemd_scope(spec):
                    reply = shim.create(cid, spec)
                t_shim = time.monotonic()
                created_in_shim = True
                faults.crash_point("container_create_shim")
                rec.pid = reply.pid
                rec.user = dict(reply.user)
                rec.state = R.CREATED
                self._save(rec)
        except BaseException:
            self._undo_create(rec, shim if created_in_shim else None)
            if nri_pod is not None:
                self.nri.remove_container(nri_pod, rec)
            raise
        self._publish(api_pb2.CONTAINER_CREATED_EVENT, rec)
        if nri_pod is not None:
            self.nri.post_create_container(nri_pod, rec)
        log.info("created container %s (%s) in pod %s in %.1f ms (shim %.1f ms)", cid[:12],
                 rec.name, pod.id[:12], (time.monotonic() - t_start) * 1000,
                 (t_shim - t_spec) * 1000)
        return cid

    def _cdi_devices(self, config: api_pb2.ContainerConfig) -> list[Resolved]:
        requested = cdi_names.requested_devices([d.name for d in config.CDI_devices],
                                                config.annotations)
        if not requested:
            return []
        if self.cdi is None:
            raise FailedPrecondition("CDI devices were requested but this runtime has no CDI "
                                     "registry")
        return self.cdi.resolve(requested)

    def _run_runtime_hooks(self, rec: ContainerRecord, kind: str, status: str) -> None:
        """poststart/poststop hooks in the runtime namespace; a failure is logged (OCI)."""
        spec_hooks = (rec.spec or {}).get("hooks") or {}
        if not spec_hooks.get(kind):
            return
        state = hooks.state(rec.id, status, rec.pid if status == "running" else 0,
                            str(self.paths.container_dir(rec.id)), rec.annotations)
        for failure in hooks.run_hooks_logged(spec_hooks, kind, state):
            log.warning("container %s: %s", rec.id[:12], failure)

    def _remove_rdt_group(self, rec: ContainerRecord) -> None:
        for failure in resctrl.remove((rec.spec or {}).get("intel_rdt"), rec.id):
            log.warning("container %s: removing its resctrl group: %s", rec.id[:12], failure)

    def _pod_ready(self, pod_id: str) -> contextlib.AbstractContextManager[Any]:
        return self.sandboxes.while_ready(pod_id)

    def _target_pid_ns(self, pod_id: str, target_id: str) -> str:
        target = self.get(target_id)
        self._refresh(target)
        if target.pod_id != pod_id:
            raise InvalidArgument(f"target container {target_id} is in another pod")
        if target.state != R.RUNNING or not target.pid:
            raise FailedPrecondition(f"target container {target_id} is not running")
        return f"/proc/{target.pid}/ns/pid"

    def _undo_create(self, rec: ContainerRecord, shim: ShimClient | None) -> None:
        if shim is not None:
            with contextlib.suppress(Exception):
                shim.delete(rec.id)
        elif rec.shim_dir:  # its shim is gone: the keeper it forked waits for nobody
            keeper.kill_keeper(statusfile.containers_dir(rec.shim_dir), rec.id)
        if rec.shim_dir:
            statusfile.remove_state(rec.shim_dir, rec.id)
        if _driver(rec) == "systemd" or shim is None:  # a scope started for a create that
            self._remove_cgroup(rec)                     # failed later; an init's cgroup
        self._remove_rdt_group(rec)
        shutil.rmtree(self.paths.container_dir(rec.id), ignore_errors=True)
        with self._lock:
            self._records.pop(rec.id, None)
            self._ctr_locks.pop(rec.id, None)
        self.store.delete(R.KIND, rec.id)
        self._items.drop(rec.id)

    # ------------------------------------------------------------------ state
    def _save(self, rec: ContainerRecord) -> None:
        self.store.update(R.KIND, rec.id, rec.to_json_text())
        self._items.changed(rec.id)

    def _shim_alive(self, shim_dir: str, polled: bool = False) -> bool:
        if not polled:
            self.shim_watch.poll()
        return self.shim_watch.alive(shim_dir)

    def _apply(self, rec: ContainerRecord, state: ContainerState) -> None:
        """Copies a shim state into the record; persists and publishes a transition."""
        with self._lock:
            before = rec.state
            changed = rec.apply_state(state)
            if not changed:
                return
            self._save(rec)
        if rec.state == R.EXITED and before != R.EXITED:
            log.info("container %s exited with %d (%s)", rec.id[:12], rec.exit_code, rec.reason)
            self._publish(api_pb2.CONTAINER_STOPPED_EVENT, rec)
            self._nri(self.nri.stop_container, rec)

    def _drain_status_events(self) -> None:
        """Takes note of the status files written since the last drain (see _refresh)."""
        changed = self._status_watch.drain()
        with self._lock:
            self._drains += 1
            if changed is None or changed:
                self._news += 1
            if changed is None:
                self._all_changed_at = self._drains
                return
            for cid in changed:
                self._changed_at[cid] = self._drains

    def _unchanged_since_read(self, cid: str) -> bool:
        """No status file write of cid was drained after its last read (the read started after
        every drained write, so it saw them)."""
        read_at = self._read_at.get(cid)
        return (read_at is not None and self._all_changed_at <= read_at
                and self._changed_at.get(cid, 0) <= read_at)

    def _refresh(self, rec: ContainerRecord, alive_cache: dict[str, bool] | None = None,
                 watched: bool = False) -> bool:
        """Brings rec's runtime state up to date from the shim's status file. alive_cache: the
        liveness of the shims seen so far in a batch (whose caller ran shim_watch.poll()).
        watched: the caller has just run _drain_status_events(), so a file no drained event
        names since its last read is left unread (Lists; every other caller stats it).
        True when rec is settled: only a store write, a drained status file event or a
        change seen by the shim watch can change its state from now on (list_response)."""
        if rec.state not in (R.CREATED, R.RUNNING) or not rec.shim_dir:
            return True
        cache = alive_cache if alive_cache is not None else {}
        alive = cache.get(rec.shim_dir)
        if alive is None:
            alive = cache[rec.shim_dir] = self._shim_alive(rec.shim_dir,
                                                           polled=alive_cache is not None)
        path = self._status_paths.get(rec.id)
        if path is None:
            path = self._status_paths[rec.id] = statusfile.status_path(rec.shim_dir, rec.id)
        if not alive:
            # re-check the file first: the shim may have recorded the exit before dying
            state = shim_client.read_states(rec.shim_dir).get(rec.id)
            if state is not None and state.state != R.EXITED:
                recorded = shim_client.recorded_exit(rec.shim_dir, rec.id, state)
                if recorded is None and keeper.keeper_alive(
                        statusfile.containers_dir(rec.shim_dir), rec.id):
                    self._apply(rec, state)  # it runs on under its keeper, which records
                    return False             # its end (runtime.keeper)
                state = recorded or state
            if state is None or state.state != R.EXITED:
                state = ContainerState(
                    R.EXITED, exit_code=255, reason="Error", finished_at=time.time_ns(),
                    message="the pod's shim is gone; the container's fate is unknown")
            self._apply(rec, state)
            return False
        if watched and self._unchanged_since_read(rec.id):
            return self.shim_watch.watched_alive(rec.shim_dir)
        drain = self._drains                    # taken before the stat (_unchanged_since_read)
        inotify = self._status_watch.watch(os.path.dirname(path))   # watched before the stat
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        # Each write is a new file (temp + rename): inode and size tell versions apart where
        # a coarse clock gives two quick writes the same mtime.
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._status_versions.get(rec.id) != version:
            state = _read_state(path)
            if state is None:
                return False
            self._status_versions[rec.id] = version
            self._apply(rec, state)
        if inotify:
            with self._lock:
                if rec.id in self._records:
                    self._read_at[rec.id] = max(drain, self._read_at.get(rec.id, 0))
        return False   # settled from the next List on, if inotify watches its file

    def _shim_state(self, rec: ContainerRecord) -> None:
        """Asks the shim directly (used where the freshest state matters)."""
        try:
            states = ShimClient(rec.shim_dir, timeout=10).state(rec.id)
        except (NotFound, Unavailable):
            self._refresh(rec)
            return
        if rec.id in states:
            self._apply(rec, states[rec.id])

    # ------------------------------------------------------------------ lifecycle
    def start(self, container_id: str) -> None:
        rec = self.get(container_id)
        with self._ctr_lock(rec.id):
            self._refresh(rec)
            if rec.state != R.CREATED:
                raise FailedPrecondition(f"container {rec.id} is {rec.state}; only a created "
                                         "container can be started")
            self._nri(self.nri.start_container, rec, required=True)
            shim = ShimClient(rec.shim_dir)
            try:
                started = shim.start(rec.id)
            except PycriError:
                self._shim_state(rec)
                raise
            with self._lock:
                if rec.state == R.CREATED:
                    rec.state = R.RUNNING
                    rec.started_at = started
                    self._save(rec)
            # no second round trip for the state: an exit from now on reaches the record from
            # the status file (_refresh), and its STOPPED event follows this STARTED one
            self._run_runtime_hooks(rec, "poststart", "running")
        self._publish(api_pb2.CONTAINER_STARTED_EVENT, rec)
        self._nri(self.nri.post_start_container, rec)

    def stop(self, container_id: str, timeout: float) -> None:
        """Stops a container; an unknown id is not an error (kubelet and critest retry stops)."""
        try:
            rec = self.get(container_id)
        except NotFound:
            log.info("StopContainer: container %s does not exist; nothing to stop",
                     shorten(container_id))
            return
        with self._ctr_lock(rec.id):
            self._stop_locked(rec, timeout)

    def _stop_locked(self, rec: ContainerRecord, timeout: float) -> None:
        self._refresh(rec)
        if rec.state not in (R.CREATED, R.RUNNING):
            return
        shim = ShimClient(rec.shim_dir)
        try:
            if rec.state == R.RUNNING and timeout > 0:
                shim.kill(rec.id, rec.kill_signal)
                state = shim.wait(rec.id, timeout)
                if state.state == R.EXITED:
                    self._apply(rec, state)
                    return
            shim.kill(rec.id, int(signal.SIGKILL))
            state = shim.wait(rec.id, KILL_WAIT_SECONDS)
        except Unavailable:               # the shim is gone: its status files tell the rest
            self._refresh(rec)
            self._kill_leftovers(rec)
            return
        except NotFound:                  # the shim does not know it (any more)
            self._kill_leftovers(rec)
            self._apply(rec, ContainerState(
                R.EXITED, exit_code=255, reason="Error", finished_at=time.time_ns(),
                message="the pod's shim no longer knows this container"))
            return
        self._apply(rec, state)
        if state.state != R.EXITED:
            raise DeadlineExceeded(f"container {rec.id} did not exit {KILL_WAIT_SECONDS:.0f}s "
                                   "after SIGKILL")

    def remove(self, container_id: str) -> None:
        try:
            rec = self.get(container_id)
        except NotFound:
            return  # idempotent, as kubelet expects
        with self._ctr_lock(rec.id):
            self._remove_locked(rec)

    def _remove_locked(self, rec: ContainerRecord) -> None:
        with self._lock:
            if rec.id not in self._records:
                return
        self._refresh(rec)
        if rec.shim_dir:
            try:
                ShimClient(rec.shim_dir).delete(rec.id)
            except Unavailable:  # its keeper outlives the shim and waits to be told to go
                keeper.kill_keeper(statusfile.containers_dir(rec.shim_dir), rec.id)
            except NotFound:
                pass
            statusfile.remove_state(rec.shim_dir, rec.id)
        self._remove_cgroup(rec)
        self._remove_rdt_group(rec)
        self._run_runtime_hooks(rec, "poststop", "stopped")
        shutil.rmtree(self.paths.container_dir(rec.id), ignore_errors=True)
        self.store.delete(R.KIND, rec.id)
        self._items.drop(rec.id)
        with self._lock:
            self._records.pop(rec.id, None)
            self._status_versions.pop(rec.id, None)
            self._status_paths.pop(rec.id, None)
            self._read_at.pop(rec.id, None)
            self._changed_at.pop(rec.id, None)
            self._ctr_locks.pop(rec.id, None)
        if rec.state != R.EXITED:
            rec.state = R.EXITED
        self._publish(api_pb2.CONTAINER_DELETED_EVENT, rec)
        self._nri(self.nri.remove_container, rec)
        log.info("removed container %s", rec.id[:12])

    @staticmethod
    def _cgroup_path(rec: ContainerRecord) -> str | None:
        cg = rec.spec.get("cgroup") if rec.spec else None
        return cgroups.spec_cgroup_path(cg) if cg else None

    def _kill_leftovers(self, rec: ContainerRecord) -> None:
        """Processes of a container whose shim is gone live on in its cgroup: kill them."""
        path = self._cgroup_path(rec)
        if not path:
            return
        try:
            for pid in cgroups.open_cgroup(path).pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        except (OSError, PycriError) as exc:
            log.warning("killing what is left of container %s: %s", rec.id[:12], exc)

    def _remove_cgroup(self, rec: ContainerRecord) -> None:
        path = self._cgroup_path(rec)
        if not path:
            return
        try:
            if _driver(rec) == "systemd":
                systemd_units.stop_container_scope(path)  # StopUnit + ResetFailedUnit
            cgroups.remove_cgroup(path)   # SIGKILLs anything still inside
        except (OSError, PycriError) as exc:
            log.warning("removing the cgroup %s of container %s: %s", path, rec.id[:12], exc)

    # ------------------------------------------------------------------ pods
    def in_pod(self, pod_id: str) -> builtins.list[ContainerRecord]:
        with self._lock:
            return [r for r in self._records.values()
                    if r.pod_id == pod_id and r.state != R.CREATING]

    def stop_all_in_pod(self, pod_id: str, grace: float) -> None:
        """Stop signal to every live container of the pod, grace, then SIGKILL."""
        recs = self.in_pod(pod_id)
        threads = [threading.Thread(target=self._stop_quietly, args=(r, grace), daemon=True)
                   for r in recs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _stop_quietly(self, rec: ContainerRecord, grace: float) -> None:
        try:
            with self._ctr_lock(rec.id):
                self._stop_locked(rec, grace)
        except Exception:
            log.exception("stopping container %s", rec.id[:12])

    def remove_all_in_pod(self, pod_id: str) -> None:
        for rec in self.in_pod(pod_id):
            with self._ctr_lock(rec.id):
                self._remove_locked(rec)

    # ------------------------------------------------------------------ queries
    def status(self, container_id: str) -> ContainerRecord:
        rec = self.get(container_id)
        self._refresh(rec)
        return rec

    def list(self, flt: api_pb2.ContainerFilter | None = None) -> list[ContainerRecord]:
        """The containers flt selects, oldest first, their states brought up to date from
        the shims' pidfds (one poll for all) and the status files inotify says were written
        since each was last read (one read of the inotify fd; a stat each of those)."""
        return self._refreshed(flt)[0]

    def _refreshed(self, flt: api_pb2.ContainerFilter | None, polled: bool = False
                   ) -> tuple[builtins.list[ContainerRecord], bool]:
        """list(flt), and whether every container it looked at is settled (_refresh).
        polled: the caller has just run shim_watch.poll() and _drain_status_events()."""
        with self._lock:
            recs = [r for r in self._records.values() if r.state != R.CREATING]
        if not polled:
            self.shim_watch.poll()
            self._drain_status_events()
        alive: dict[str, bool] = {}
        out = []
        settled = True
        for rec in recs:
            if flt is not None and flt.id and not rec.id.startswith(flt.id):
                continue
            settled = self._refresh(rec, alive, watched=True) and settled
            if convert.matches(rec, flt):
                out.append(rec)
        return sorted(out, key=lambda r: r.created_at), settled

    def list_items(self, flt: api_pb2.ContainerFilter | None = None
                   ) -> builtins.list[api_pb2.Container]:
        """ListContainers: the Container items of list(flt), each built once per version."""
        return [self._items.item(r.id, r) for r in self.list(flt)]

    def list_response(self, flt: api_pb2.ContainerFilter | None
                      ) -> api_pb2.ListContainersResponse:
        """ListContainers' answer; without a filter the same message while no container
        changed (list_cache.AnswerCache: shared, never to be changed by the caller).

        An unfiltered List that finds nothing new (no record written, no status file
        written, no shim death or watch change since a List that found every container
        settled) answers from the cache without looking at each container: kubelet relists
        every second, and at 250 containers the walk is most of the call."""
        if flt is not None:
            return api_pb2.ListContainersResponse(containers=self.list_items(flt))
        self.shim_watch.poll()
        self._drain_status_events()
        before = self._items.generation
        quiet = (before, self._news, self.shim_watch.changes)
        if quiet == self._quiet_at:
            cached = self._answer.cached(before)
            if cached is not None:
                return cached
        recs, settled = self._refreshed(None, polled=True)  # may move the generation
        self._quiet_at = quiet if settled else None
        return self._answer.answer(before, lambda: api_pb2.ListContainersResponse(
            containers=[self._items.item(r.id, r) for r in recs]))

    def list_bytes(self) -> int:
        """What the Container items of every container take in a List (cri_server.list_budget)."""
        with self._lock:
            recs = list(self._records.values())
        # Sizes are remembered by id: labels and annotations never change, and what a state change
        # adds (reason, message, exit code) is inside the budget's per-item allowance.
        sizes = {r.id: self._list_sizes.get(r.id) or convert.container(r).ByteSize() for r in recs}
        self._list_sizes = sizes
        return sum(sizes.values())

    def records(self) -> builtins.list[ContainerRecord]:
        """Every container (none being created) as last refreshed, without asking any shim:
        the cheap view for pollers (ListContainerStats); the monitor keeps it fresh."""
        with self._lock:
            return [r for r in self._records.values() if r.state != R.CREATING]

    def update_resources(self, container_id: str, update: dict[str, Any],
                         nri_hooks: bool = True) -> ContainerRecord:
        """UpdateContainerResources: merges `update` (ContainerSpec resource names) into the
        container's resources, writes what changed to its live cgroup (created or running;
        an exited container only has its record updated, as containerd does) and keeps the
        result in the record (ContainerStatus.resources). A failed cgroup write is undone.
        NRI plugins may change the update first (not for their own, unsolicited updates:
        nri_hooks=False)."""
        from cri_server import resource_update
        rec = self.get(container_id)
        with self._ctr_lock(rec.id):
            self._refresh(rec)
            if nri_hooks and self.nri is not NO_NRI:
                pod = self._nri_pod(rec)
                if pod is not None:
                    update = self.nri.update_container(pod, rec, update)
            current = dict(rec.resources)
            merged = resource_update.merge(current, update)
            path = self._cgroup_path(rec)
            if path and rec.state in (R.CREATED, R.RUNNING):
                writes = resource_update.changed_only(current, merged)
                systemd = _driver(rec) == "systemd"
                try:
                    if writes and systemd:  # the unit's properties first, as runc does
                        systemd_units.update_container_scope(path, writes)
                    if writes:
                        cgroups.apply_resources(path, writes)
                except PycriError:
                    undo = resource_update.changed_only(merged, current)
                    with contextlib.suppress(PycriError, OSError):
                        if systemd:
                            systemd_units.update_container_scope(path, undo)
                        cgroups.apply_resources(path, undo)
                    raise
            with self._lock:
                rec.resources = merged
                if rec.spec.get("cgroup"):
                    rec.spec = {**rec.spec, "cgroup": {**rec.spec["cgroup"],
                                                       "resources": dict(merged)}}
                self._save(rec)
        if nri_hooks:
            self._nri(self.nri.post_update_container, rec)
        return rec

    def is_image_in_use(self, image_id: str) -> bool:
        with self._lock:
            return any(r.image_id == image_id or image_id in r.volume_image_ids
                       for r in self._records.values())

    def running_container(self, container_id: str, what: str) -> tuple[ContainerRecord,
                                                                          ShimClient]:
        rec = self.get(container_id)
        self._refresh(rec)
        if rec.state != R.RUNNING:
            raise FailedPrecondition(f"container {rec.id} is {rec.state}; {what} needs a "
                                     "running container")
        return rec, ShimClient(rec.shim_dir)

    def exec_target(self, container_id: str, cmd: builtins.list[str], what: str
                    ) -> tuple[ContainerRecord, ShimClient]:
        """The running container `cmd` is to be run in; InvalidArgument for a command line
        execve(2) would refuse there (the container's environment counts too)."""
        check_argv(cmd, what)
        rec, shim = self.running_container(container_id, "exec")
        env = ((rec.spec or {}).get("process") or {}).get("env") or []
        arglimits.check_exec_size(cmd, env, what)
        return rec, shim

    def pod_netns(self, pod_id: str) -> str | None:
        pod = self._pod(pod_id)
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")
        return None if pod.host_network else (pod.netns_path or pod.ns_paths.get("net"))

    def reopen_log(self, container_id: str) -> None:
        rec, shim = self.running_container(container_id, "reopening its log")
        shim.reopen_log(rec.id)

    def exec_sync(self, container_id: str, cmd: builtins.list[str], timeout: float
                  ) -> tuple[bytes, bytes, int]:
        if not cmd:
            raise InvalidArgument("ExecSync needs a command")
        if timeout < 0:
            raise InvalidArgument(f"timeout must not be negative, got {timeout}")
        rec, shim = self.exec_target(container_id, cmd, "ExecSync")
        return exec_sync.run(shim, rec.id, cmd, timeout)

    # ------------------------------------------------------------------ life of the daemon
    def recover(self) -> None:
        """Loads the records; rolls back interrupted creates; refreshes states."""
        for data in self.store.list(R.KIND):
            rec = ContainerRecord.from_json(data)
            with self._lock:
                self._records[rec.id] = rec
            self._items.changed(rec.id)
        alive: dict[str, bool] = {}
        self.shim_watch.poll()
        for rec in list(self._records.values()):
            if rec.state == R.CREATING:
                log.info("rolling back interrupted create of container %s", rec.id[:12])
                shim = None
                if rec.shim_dir:
                    alive.setdefault(rec.shim_dir, self._shim_alive(rec.shim_dir, polled=True))
                    shim = ShimClient(rec.shim_dir) if alive[rec.shim_dir] else None
                self._undo_create(rec, shim)
                continue
            if not self._pod_exists(rec.pod_id):
                # the pod was removed but the daemon died before its containers were
                log.info("removing container %s of the removed pod %s", rec.id[:12],
                         rec.pod_id[:12])
                self._remove_locked(rec)
                continue
            self._refresh(rec, alive)

    def _pod_exists(self, pod_id: str) -> bool:
        try:
            self.sandboxes.get(pod_id)
            return True
        except NotFound:
            return False
        except Exception:  # noqa: BLE001 - when in doubt, keep the container
            return True

    def start_monitor(self) -> None:
        self._stop.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True,
                                         name="container-monitor")
        self._monitor.start()

    def _monitor_loop(self) -> None:
        while not self._stop.wait(MONITOR_INTERVAL):
            try:
                with self._lock:
                    live = [r for r in self._records.values()
                            if r.state in (R.CREATED, R.RUNNING)]
                alive: dict[str, bool] = {}
                self.shim_watch.poll()
                self._drain_status_events()
                for rec in live:
                    self._refresh(rec, alive, watched=True)
            except Exception:
                log.exception("container monitor")

    def close(self) -> None:
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(5)
            self._monitor = None
        self._status_watch.close()

    def _nri_pod(self, rec: ContainerRecord) -> Any:
        try:
            return self.sandboxes.get(rec.pod_id)
        except NotFound:
            return None

    def _nri(self, hook: Callable[[Any, ContainerRecord], None], rec: ContainerRecord,
             required: bool = False) -> None:
        """Runs an NRI hook for rec; only a required one (StartContainer) may fail the call."""
        if self.nri is NO_NRI:
            return
        pod = self._nri_pod(rec)
        if pod is None:
            return
        if required:
            hook(pod, rec)
            return
        try:
            hook(pod, rec)
        except Exception:
            log.exception("NRI notification for container %s", rec.id[:12])

    def _publish(self, event_type: int, rec: ContainerRecord) -> None:
        if self.event_sink is None:
            return
        try:
            self.event_sink(event_type, rec)
        except Exception:
            log.exception("publishing container event")


def _repo_digest(requested: str, img: ImageRecord) -> str:
    """The image's repo digest for ContainerStatus.image_ref: the one of the repository the
    request named (an image can be known under several), else the first one."""
    digests = img.repo_digests
    from imageservice.reference import parse
    try:
        ref = parse(requested)
    except PycriError:  # an image ID or ID prefix was requested
        ref = None
    if ref is not None:
        want = ref.digested if ref.digest else f"{ref.name}@"
        for d in digests:
            if d == want or d.startswith(want):
                return str(d)
    return str(digests[0]) if digests else ""


def _read_state(path: str) -> ContainerState | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return shim_client.parse_state(data)


def _storable_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as kept in the record: the seccomp rules summarised (they are large)."""
    out = dict(spec)
    prof = spec.get("seccomp")
    if prof:
        out["seccomp"] = {"defaultAction": prof.get("defaultAction"),
                          "syscall_rules": len(prof.get("syscalls") or [])}
    return out
