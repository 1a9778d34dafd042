"""The List caches: ItemCache (container items), SandboxIndex (pod records and items),
ShimWatch (shim liveness by pidfd), and the managers' Lists built on them reflecting every
change at once: a write of the record, a status file the shim wrote, a shim that died.

The shim is a real process (`sleep`) that the /proc identity check is told to accept.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cri_server.config import Config
from cri_server.containers import record as R
from cri_server.containers.manager import ContainerManager
from cri_server.list_cache import AnswerCache, ItemCache
from cri_server.paths import Paths
from cri_server.sandboxes import manager as sandbox_manager
from cri_server.sandboxes import shim_process, views
from cri_server.sandboxes.index import SandboxIndex
from cri_server.sandboxes.manager import SandboxManager
from cri_server.sandboxes.record import NOTREADY, READY
from cri_server.sandboxes.shim_watch import ShimWatch
from cri_server.store import Store
from proto import api_pb2
from runtime.shim import statusfile


# -- ItemCache ---------------------------------------------------------------------------
def test_item_cache_builds_once_per_version() -> None:
    builds: list[str] = []

    def build(state: dict[str, str]) -> str:
        builds.append(state["s"])
        return state["s"]

    cache: ItemCache[dict[str, str], str] = ItemCache(build)
    obj = {"s": "running"}
    assert cache.item("a", obj) == cache.item("a", obj) == "running"
    assert builds == ["running"]
    obj["s"] = "exited"
    cache.changed("a")
    assert cache.item("a", obj) == "exited" and builds == ["running", "exited"]
    cache.drop("a")
    assert len(cache) == 0
    assert cache.item("a", obj) == "exited" and len(builds) == 3


def test_item_cache_keeps_no_item_built_while_the_object_changed() -> None:
    obj = {"s": "running"}
    racing: ItemCache[dict[str, str], str]

    def build_racing(o: dict[str, str]) -> str:
        seen = o["s"]
        if seen == "running":
            o["s"] = "exited"       # another thread saves a new version meanwhile
            racing.changed("a")
        return seen

    racing = ItemCache(build_racing)
    assert racing.item("a", obj) == "running"          # what this caller saw ...
    assert len(racing) == 0                            # ... is not kept for the next one
    assert racing.item("a", obj) == "exited"
    assert len(racing) == 1


# -- AnswerCache -------------------------------------------------------------------------
def test_answer_cache_reuses_an_answer_while_its_generation_holds() -> None:
    gen = [0]
    cache: AnswerCache[list[int]] = AnswerCache(lambda: gen[0])
    builds: list[int] = []

    def build() -> list[int]:
        builds.append(gen[0])
        return [gen[0]]

    first = cache.answer(gen[0], build)
    assert cache.answer(gen[0], build) is first and builds == [0]
    before = gen[0]
    gen[0] += 1                                   # a change while the List looked at things
    assert cache.answer(before, build) is not first and builds == [0, 1]
    assert cache.answer(gen[0], build) == [1] and builds == [0, 1, 1]  # that one was not kept
    assert cache.answer(gen[0], build) is cache.answer(gen[0], build)
    assert len(builds) == 3


def test_answer_cache_keeps_no_answer_built_while_something_changed() -> None:
    gen = [5]
    cache: AnswerCache[str] = AnswerCache(lambda: gen[0])

    def racing() -> str:
        gen[0] += 1                               # a save lands while the answer is built
        return "old"
    assert cache.answer(5, racing) == "old"
    assert cache.answer(6, lambda: "new") == "new"


# -- SandboxIndex ------------------------------------------------------------------------
def _pod_record(tmp_path: Path, state: str = READY) -> Any:
    mgr = SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"),
                         Store(tmp_path / "index.db"), None, lambda spec: {})
    plan = sandbox_manager.validate.plan(_request(), [], "node")
    rec = mgr._new_record(_request(), plan, "digest")
    rec.state = state
    return rec


def test_sandbox_index_keeps_copies_and_rebuilds_items_per_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    builds: list[int] = []

    def build(rec: Any) -> api_pb2.PodSandbox:
        builds.append(1)
        return views.pod_sandbox(rec)

    index = SandboxIndex(build)
    rec = _pod_record(tmp_path)
    index.put(rec)
    rec.state = NOTREADY                           # the caller's copy, not saved yet
    [indexed] = index.records()
    assert indexed.state == READY
    first = index.item(indexed)
    assert first.state == api_pb2.SANDBOX_READY and index.item(indexed) is first
    assert len(builds) == 1
    index.put(rec)                                 # saved: a new version, a new item
    [indexed] = index.records()
    assert index.item(indexed).state == api_pb2.SANDBOX_NOTREADY and len(builds) == 2
    index.mark_notready(indexed.id, READY, NOTREADY)   # not READY: left as it is
    assert index.records()[0].state == NOTREADY
    index.drop(indexed.id)
    assert index.records() == []


def test_sandbox_index_mark_notready_only_changes_a_ready_pod(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    index = SandboxIndex(views.pod_sandbox)
    rec = _pod_record(tmp_path)
    index.put(rec)
    [before] = index.records()
    assert index.item(before).state == api_pb2.SANDBOX_READY
    index.mark_notready(rec.id, READY, NOTREADY)
    [after] = index.records()
    assert after.state == NOTREADY and before.state == READY   # old copies stay as they were
    assert index.item(after).state == api_pb2.SANDBOX_NOTREADY


# -- ShimWatch ---------------------------------------------------------------------------
@pytest.fixture
def fake_shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
              ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A live process standing for a pod's shim, with its shim dir and pid file."""
    proc = subprocess.Popen(["sleep", "1000"])
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    (shim_dir / "shim.pid").write_text(str(proc.pid))
    (shim_dir / "containers").mkdir()
    real = shim_process.is_shim_of
    monkeypatch.setattr(shim_process, "is_shim_of",
                        lambda pid, d: (pid == proc.pid and d == str(shim_dir)
                                        and proc.poll() is None) or real(pid, d))
    yield proc, str(shim_dir)
    proc.kill()
    proc.wait()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_shim_watch_sees_a_shim_die_at_the_next_poll(
        fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, shim_dir = fake_shim
    watch = ShimWatch()
    fds = _open_fds()
    watch.poll()
    assert watch.alive(shim_dir) and watch.alive(shim_dir, proc.pid)
    assert _open_fds() == fds + 1                  # one pidfd, opened once
    watch.poll()
    assert watch.alive(shim_dir)
    proc.kill()
    proc.wait()
    assert watch.alive(shim_dir)                   # until the next poll ...
    watch.poll()
    assert not watch.alive(shim_dir)               # ... which sees it gone
    assert not watch.alive(shim_dir, 1)            # another pid is checked afresh: not a shim
    watch.forget(shim_dir)
    assert _open_fds() == fds
    assert not watch.alive(shim_dir)               # a dead pid is not watched again
    assert _open_fds() == fds
    watch.close()


def test_shim_watch_unknown_or_missing_shim(tmp_path: Path) -> None:
    watch = ShimWatch()
    watch.poll()
    assert not watch.alive(str(tmp_path))          # no pid file
    assert not watch.alive(str(tmp_path), os.getpid())  # a live pid that is no shim
    watch.close()


# -- the managers' Lists ---------------------------------------------------------------
def _request() -> api_pb2.RunPodSandboxRequest:
    ns = api_pb2.NamespaceOption(network=api_pb2.NODE, ipc=api_pb2.NODE, pid=api_pb2.CONTAINER)
    return api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p", namespace="ns", uid="u"),
        labels={"app": "x"},
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=ns))))


def _pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shim_pid: int) -> SandboxManager:
    from cri_server.sandboxes import pod_cgroup
    monkeypatch.setattr(pod_cgroup, "create", lambda cg, resources=None: None)
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    return SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"),
                          Store(tmp_path / "runtime.db"), None,
                          lambda spec: {"pid": shim_pid})


@pytest.fixture
def pod_shim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[tuple[subprocess.Popen[bytes], SandboxManager]]:
    """A live process standing for the pods' shim, and a SandboxManager whose pods it serves
    (the /proc identity check is told to accept it while it lives)."""
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        pods = _pods(tmp_path, monkeypatch, proc.pid)
        monkeypatch.setattr(shim_process, "is_shim_of",
                            lambda pid, d: pid == proc.pid and proc.poll() is None)
        yield proc, pods
    finally:
        proc.kill()
        proc.wait()


def _ready_filter() -> api_pb2.PodSandboxFilter:
    return api_pb2.PodSandboxFilter(state=api_pb2.PodSandboxStateValue(
        state=api_pb2.SANDBOX_READY), label_selector={"app": "x"})


def test_pod_list_shows_a_dead_shim_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        pods = _pods(tmp_path, monkeypatch, proc.pid)
        monkeypatch.setattr(shim_process, "is_shim_of",
                            lambda pid, d: pid == proc.pid and proc.poll() is None)
        events: list[int] = []
        pods.event_sink = lambda kind, rec: events.append(kind)
        pod_id = pods.run(_request())
        [item] = pods.list_items(None)
        assert (item.id, item.state) == (pod_id, api_pb2.SANDBOX_READY)
        assert [i.id for i in pods.list_items(_ready_filter())] == [pod_id]
        proc.kill()
        proc.wait()
        [item] = pods.list_items(None)             # no status call, no timer: the next List
        assert item.state == api_pb2.SANDBOX_NOTREADY
        assert pods.list_items(_ready_filter()) == []
        assert pods.store.get("sandbox", pod_id)["state"] == NOTREADY  # type: ignore[index]
        assert events.count(api_pb2.CONTAINER_STOPPED_EVENT) == 1
        pods.list_items(None)
        assert events.count(api_pb2.CONTAINER_STOPPED_EVENT) == 1
    finally:
        proc.kill()
        proc.wait()


def test_pod_list_answer_is_reused_until_a_pod_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        pods = _pods(tmp_path, monkeypatch, proc.pid)
        monkeypatch.setattr(shim_process, "is_shim_of",
                            lambda pid, d: pid == proc.pid and proc.poll() is None)
        assert list(pods.list_response(None).items) == []
        pod_id = pods.run(_request())
        answer = pods.list_response(None)
        assert [(i.id, i.state) for i in answer.items] == [(pod_id, api_pb2.SANDBOX_READY)]
        assert pods.list_response(None) is answer           # nothing changed: same message
        assert pods.list_response(_ready_filter()) is not answer
        proc.kill()
        proc.wait()
        again = pods.list_response(None)                    # the dead shim, at the next List
        assert [i.state for i in again.items] == [api_pb2.SANDBOX_NOTREADY]
        kept = pods.list_response(None)   # (not the one built while its List marked it)
        assert kept == again and pods.list_response(None) is kept
        pods.remove(pod_id)
        assert list(pods.list_response(None).items) == []
    finally:
        proc.kill()
        proc.wait()


def test_pod_list_index_survives_a_new_manager(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted daemon answers from the store's records (recover loads the index)."""
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        pods = _pods(tmp_path, monkeypatch, proc.pid)
        monkeypatch.setattr(shim_process, "is_shim_of",
                            lambda pid, d: pid == proc.pid and proc.poll() is None)
        pod_id = pods.run(_request())
        again = SandboxManager(Config(), pods.paths, pods.store, None, lambda spec: {})
        monkeypatch.setattr(again, "_shim_alive", lambda rec: proc.poll() is None)
        again.recover()
        assert [(i.id, i.state) for i in again.list_items(None)] == [
            (pod_id, api_pb2.SANDBOX_READY)]
        proc.kill()
        proc.wait()
        again2 = SandboxManager(Config(), pods.paths, pods.store, None, lambda spec: {})
        monkeypatch.setattr(again2, "_shim_alive", lambda rec: False)
        again2.recover()                            # the shim died while the daemon was down
        assert [i.state for i in again2.list_items(None)] == [api_pb2.SANDBOX_NOTREADY]
    finally:
        proc.kill()
        proc.wait()


def test_container_list_follows_status_files_and_saves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, shim_dir = fake_shim
    store = Store(tmp_path / "runtime.db")
    paths = Paths(tmp_path / "root", tmp_path / "state")
    pods = SandboxManager(Config(), paths, store, None, lambda spec: {})
    cm = ContainerManager(store, paths, pods, images=None)  # type: ignore[arg-type]
    rec = R.ContainerRecord(id="c" * 64, pod_id="p" * 64, name="c", attempt=0, image="busybox",
                            labels={"tier": "a"}, shim_dir=shim_dir, state=R.RUNNING,
                            pid=proc.pid, created_at=1, started_at=2)
    store.insert(R.KIND, rec.id, rec.name_key, rec.to_json())
    cm._records[rec.id] = rec
    running = api_pb2.ContainerFilter(state=api_pb2.ContainerStateValue(
        state=api_pb2.CONTAINER_RUNNING), label_selector={"tier": "a"})
    [item] = cm.list_items()
    assert item.state == api_pb2.CONTAINER_RUNNING
    assert cm.list_items()[0] is item                    # cached while nothing changed
    assert [i.id for i in cm.list_items(running)] == [rec.id]
    # the shim records the exit: the next List shows it, without a ContainerStatus call
    statusfile.write_state(shim_dir, rec.id, {"state": R.EXITED, "exit_code": 3,
                                              "finished_at": 5, "reason": "Error"})
    [item] = cm.list_items()
    assert item.state == api_pb2.CONTAINER_EXITED
    assert cm.list_items(running) == []
    assert store.get(R.KIND, rec.id)["exit_code"] == 3  # type: ignore[index]
    # a record change that is saved (here: through _save) is listed at once too
    rec.labels = {"tier": "b"}
    cm._save(rec)
    assert dict(cm.list_items()[0].labels) == {"tier": "b"}


def test_container_list_answer_is_reused_until_a_container_changes(
        tmp_path: Path, fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, shim_dir = fake_shim
    store = Store(tmp_path / "runtime.db")
    paths = Paths(tmp_path / "root", tmp_path / "state")
    pods = SandboxManager(Config(), paths, store, None, lambda spec: {})
    cm = ContainerManager(store, paths, pods, images=None,  # type: ignore[arg-type]
                          shim_watch=pods.shim_watch)
    recs = [R.ContainerRecord(id=c * 64, pod_id="p" * 64, name=c, attempt=0, image="busybox",
                              shim_dir=shim_dir, state=R.RUNNING, pid=proc.pid, created_at=n)
            for n, c in enumerate("ef")]
    for rec in recs:
        store.insert(R.KIND, rec.id, rec.name_key, rec.to_json())
        cm._records[rec.id] = rec
        cm._items.changed(rec.id)          # what every write of the manager does (_save)
    answer = cm.list_response(None)
    assert [i.id for i in answer.containers] == [r.id for r in recs]
    assert cm.list_response(None) is answer
    # the shim records an exit: the next List sees the status file and answers anew
    statusfile.write_state(shim_dir, recs[1].id, {"state": R.EXITED, "exit_code": 3,
                                                  "finished_at": 5, "reason": "Error"})
    again = cm.list_response(None)
    assert [i.state for i in again.containers] == [api_pb2.CONTAINER_RUNNING,
                                                   api_pb2.CONTAINER_EXITED]
    kept = cm.list_response(None)     # (not the one built while its List saved the exit)
    assert kept == again and cm.list_response(None) is kept
    recs[0].labels = {"tier": "b"}
    cm._save(recs[0])
    assert dict(cm.list_response(None).containers[0].labels) == {"tier": "b"}
    proc.kill()                                      # the shim dies: both are gone at once
    proc.wait()
    assert [i.state for i in cm.list_response(None).containers] == [
        api_pb2.CONTAINER_EXITED] * 2


def test_container_list_shows_a_dead_shim_at_once(
        tmp_path: Path, fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, shim_dir = fake_shim
    store = Store(tmp_path / "runtime.db")
    paths = Paths(tmp_path / "root", tmp_path / "state")
    pods = SandboxManager(Config(), paths, store, None, lambda spec: {})
    cm = ContainerManager(store, paths, pods, images=None,  # type: ignore[arg-type]
                          shim_watch=pods.shim_watch)
    rec = R.ContainerRecord(id="d" * 64, pod_id="p" * 64, name="c", attempt=0, image="busybox",
                            shim_dir=shim_dir, state=R.RUNNING, pid=proc.pid, created_at=1)
    store.insert(R.KIND, rec.id, rec.name_key, rec.to_json())
    cm._records[rec.id] = rec
    assert cm.list_items()[0].state == api_pb2.CONTAINER_RUNNING
    proc.kill()
    proc.wait()
    assert cm.list_items()[0].state == api_pb2.CONTAINER_EXITED
    assert cm.records()[0].exit_code == 255


def test_container_list_stats_only_the_status_files_written_since(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    """With inotify on the shims' status directories a List reads no file nobody wrote, and
    still sees the one that was written."""
    from cri_server.containers import manager as container_manager
    proc, shim_dir = fake_shim
    store = Store(tmp_path / "runtime.db")
    paths = Paths(tmp_path / "root", tmp_path / "state")
    pods = SandboxManager(Config(), paths, store, None, lambda spec: {})
    cm = ContainerManager(store, paths, pods, images=None)  # type: ignore[arg-type]
    assert cm._status_watch.enabled, "inotify_init1 failed on this host"
    recs = []
    for n in range(3):
        rec = R.ContainerRecord(id=f"{n}" * 64, pod_id="p" * 64, name=f"c{n}", attempt=0,
                                image="busybox", shim_dir=shim_dir, state=R.RUNNING,
                                pid=proc.pid, created_at=n + 1)
        store.insert(R.KIND, rec.id, rec.name_key, rec.to_json())
        statusfile.write_state(shim_dir, rec.id, {"state": R.RUNNING, "pid": proc.pid})
        cm._records[rec.id] = rec
        recs.append(rec)
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: Any, *a: Any, **k: Any) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *a, **k)

    monkeypatch.setattr(container_manager.os, "stat", counting_stat)
    assert [i.state for i in cm.list_items()] == [api_pb2.CONTAINER_RUNNING] * 3
    assert len(stats) == 3                       # first List: every file once
    stats.clear()
    cm.list_items()
    assert stats == []                           # nothing written: nothing read
    statusfile.write_state(shim_dir, recs[1].id, {"state": R.EXITED, "exit_code": 2})
    assert [i.state for i in cm.list_items()] == [
        api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_EXITED, api_pb2.CONTAINER_RUNNING]
    assert stats == [statusfile.status_path(shim_dir, recs[1].id)]
    stats.clear()
    cm.status(recs[0].id)                        # a single status reads its file as before
    assert len(stats) == 1
    cm.close()


def _containers(tmp_path: Path, watch: ShimWatch | None = None
                ) -> tuple[Store, ContainerManager]:
    """A store and a ContainerManager over it (with a SandboxManager sharing `watch`)."""
    store = Store(tmp_path / "runtime.db")
    paths = Paths(tmp_path / "root", tmp_path / "state")
    pods = SandboxManager(Config(), paths, store, None, lambda spec: {}, shim_watch=watch)
    return store, ContainerManager(store, paths, pods, images=None,  # type: ignore[arg-type]
                                   shim_watch=pods.shim_watch)


def _add_running(store: Store, cm: ContainerManager, cid: str, shim_dir: str, pid: int,
                 created_at: int) -> R.ContainerRecord:
    """A RUNNING container the shim's status file says runs, as the manager's create leaves it."""
    rec = R.ContainerRecord(id=cid, pod_id="p" * 64, name=f"c{created_at}", attempt=0,
                            image="busybox", shim_dir=shim_dir, state=R.RUNNING, pid=pid,
                            created_at=created_at)
    store.insert(R.KIND, rec.id, rec.name_key, rec.to_json())
    statusfile.write_state(shim_dir, rec.id, {"state": R.RUNNING, "pid": pid})
    cm._records[rec.id] = rec
    cm._items.changed(rec.id)
    return rec


def test_container_list_that_finds_nothing_new_walks_no_container(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    """An unfiltered List after one that found every container settled answers without
    looking at any container, until a record is saved, a status file is written or the shim
    watch sees a change; then it walks them all again and shows the change."""
    proc, shim_dir = fake_shim
    store, cm = _containers(tmp_path)
    assert cm._status_watch.enabled, "inotify_init1 failed on this host"
    recs = [_add_running(store, cm, f"{n}" * 64, shim_dir, proc.pid, n + 1) for n in range(3)]
    walked: list[str] = []
    real_refresh = cm._refresh

    def counting_refresh(rec: R.ContainerRecord, *a: Any, **k: Any) -> bool:
        walked.append(rec.id)
        return real_refresh(rec, *a, **k)

    monkeypatch.setattr(cm, "_refresh", counting_refresh)
    cm.list_response(None)            # reads every file: nothing settled yet
    cm.list_response(None)            # every container settled now
    assert len(walked) == 6
    walked.clear()
    answer = cm.list_response(None)
    assert cm.list_response(None) is answer and walked == []
    # a status file written: walked again, the exit shown
    statusfile.write_state(shim_dir, recs[1].id, {"state": R.EXITED, "exit_code": 2})
    assert [i.state for i in cm.list_response(None).containers] == [
        api_pb2.CONTAINER_RUNNING, api_pb2.CONTAINER_EXITED, api_pb2.CONTAINER_RUNNING]
    assert len(walked) == 3
    cm.list_response(None)
    walked.clear()
    cm.list_response(None)
    assert walked == []
    # a record saved: walked again, the change shown
    recs[0].labels = {"tier": "b"}
    cm._save(recs[0])
    assert dict(cm.list_response(None).containers[0].labels) == {"tier": "b"}
    assert len(walked) == 3
    cm.list_response(None)
    walked.clear()
    # the shim dies: its pidfd moves the watch, and the walk shows both running ones gone
    proc.kill()
    proc.wait()
    assert [i.state for i in cm.list_response(None).containers] == [
        api_pb2.CONTAINER_EXITED] * 3
    assert len(walked) == 3
    # a filtered List always walks
    walked.clear()
    cm.list_response(api_pb2.ContainerFilter(id=recs[0].id))
    assert walked == [recs[0].id]
    cm.close()


def test_container_list_never_skips_a_container_whose_shim_has_no_pidfd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_shim: tuple[subprocess.Popen[bytes], str]) -> None:
    """Without a pidfd (old kernels) a shim's death moves nothing: every List walks."""
    proc, shim_dir = fake_shim
    watch = ShimWatch()
    monkeypatch.setattr(watch, "_pidfds", False)
    store, cm = _containers(tmp_path, watch)
    _add_running(store, cm, "e" * 64, shim_dir, proc.pid, 1)
    for _ in range(3):
        assert cm.list_response(None).containers[0].state == api_pb2.CONTAINER_RUNNING
    proc.kill()
    proc.wait()
    assert cm.list_response(None).containers[0].state == api_pb2.CONTAINER_EXITED
    cm.close()


def test_pod_list_that_finds_nothing_new_walks_no_pod(
        monkeypatch: pytest.MonkeyPatch,
        pod_shim: tuple[subprocess.Popen[bytes], SandboxManager]) -> None:
    """An unfiltered ListPodSandbox after one that found every READY pod's shim held by a
    live pidfd answers without looking at any pod, until a record is written or the shim
    watch sees a change (test_pod_list_walks_again_when_a_shim_dies)."""
    _, pods = pod_shim
    pod_id = pods.run(_request())
    walked: list[str] = []
    real_refresh = pods._refresh

    def counting_refresh(rec: Any, polled: bool = False) -> Any:
        walked.append(rec.id)
        return real_refresh(rec, polled)

    monkeypatch.setattr(pods, "_refresh", counting_refresh)
    pods.list_response(None)      # opens the shim's pidfd: a change of the watch
    answer = pods.list_response(None)
    assert walked == [pod_id, pod_id]
    walked.clear()
    assert pods.list_response(None) is answer and walked == []
    # a record written (stop): walked again, the change shown
    pods.stop(pod_id)
    walked.clear()
    assert [i.state for i in pods.list_response(None).items] == [api_pb2.SANDBOX_NOTREADY]
    assert walked == [pod_id]


def test_pod_list_walks_again_when_a_shim_dies(
        pod_shim: tuple[subprocess.Popen[bytes], SandboxManager]) -> None:
    proc, pods = pod_shim
    pod_id = pods.run(_request())
    pods.list_response(None)
    quiet = pods.list_response(None)
    assert pods.list_response(None) is quiet
    proc.kill()
    proc.wait()
    assert [(i.id, i.state) for i in pods.list_response(None).items] == [
        (pod_id, api_pb2.SANDBOX_NOTREADY)]
