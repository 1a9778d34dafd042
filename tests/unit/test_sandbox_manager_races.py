"""SandboxManager on failure and race paths: a RunPodSandbox whose undo fails too, and a
RemovePodSandbox that arrives while a container is being created in the pod.

The kernel pieces (cgroups, shims) are replaced by fakes: the tests are about the records.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cri_server.config import Config
from cri_server.paths import Paths
from cri_server.sandboxes import manager as sandbox_manager
from cri_server.sandboxes import pod_cgroup
from cri_server.sandboxes.manager import SandboxManager
from cri_server.sandboxes.record import KIND, NOTREADY
from cri_server.store import Store
from imageservice.manifest import ImageConfig
from imageservice.metadata import ImageRecord
from proto import api_pb2
from pycri_common.errors import AlreadyExists, FailedPrecondition
from runtime.container_spec import ContainerSpec
from runtime.pod_spec import PodSpec
from runtime.shim.protocol import CreateReply


def _row(store: Store, pod_id: str) -> dict[str, Any]:
    row = store.get(KIND, pod_id)
    assert row is not None, f"no record of pod {pod_id}"
    return row


def _request() -> api_pb2.RunPodSandboxRequest:
    ns = api_pb2.NamespaceOption(network=api_pb2.NODE, ipc=api_pb2.NODE, pid=api_pb2.CONTAINER)
    return api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p", namespace="ns", uid="u"),
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=ns))))


def test_failed_undo_leaves_a_removable_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cgroup_busy = [True]

    def remove_cgroup(cg: Any, timeout: float = 5.0) -> None:
        if cgroup_busy[0]:
            raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(pod_cgroup, "create", lambda cg, resources=None: None)
    monkeypatch.setattr(pod_cgroup, "remove", remove_cgroup)
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")

    def spawn_shim(spec: PodSpec) -> dict[str, Any]:
        raise FailedPrecondition("starting the pod's shim failed: boom")

    store = Store(tmp_path / "runtime.db")
    mgr = SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"), store, None,
                         spawn_shim)
    with pytest.raises(FailedPrecondition, match="boom"):
        mgr.run(_request())
    [left] = store.list(KIND)  # the undo failed: the record stays for a later clean-up ...
    assert left["state"] == NOTREADY  # ... but not as "being created", which nothing can remove
    with pytest.raises(AlreadyExists, match="remove it first"):
        mgr.run(_request())  # kubelet's retry learns the name is taken by a pod it can remove
    mgr.stop(left["id"])
    cgroup_busy[0] = False
    mgr.remove(left["id"])
    assert store.list(KIND) == []
    assert not Path(left["pod_dir"]).exists()


def test_failed_undo_at_recovery_leaves_a_removable_pod(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a pod a killed daemon left half-made, undone at the next start."""
    monkeypatch.setattr(pod_cgroup, "remove", lambda cg, timeout=5.0: (_ for _ in ()).throw(
        OSError(16, "Device or resource busy")))
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    store = Store(tmp_path / "runtime.db")
    mgr = SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"), store, None,
                         lambda spec: {})
    plan = sandbox_manager.validate.plan(_request(), [], "node")
    rec = mgr._new_record(_request(), plan, "digest")
    rec.cgroup_owned = True
    store.insert(KIND, rec.id, rec.name_key, rec.to_json())  # as the killed daemon left it
    mgr.recover()
    assert _row(store, rec.id)["state"] == NOTREADY


def test_failed_run_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pod_cgroup, "create", lambda cg, resources=None: None)
    monkeypatch.setattr(pod_cgroup, "remove", lambda cg, timeout=5.0: None)
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")

    def spawn_shim(spec: PodSpec) -> dict[str, Any]:
        raise FailedPrecondition("starting the pod's shim failed: boom")

    store = Store(tmp_path / "runtime.db")
    mgr = SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"), store, None,
                         spawn_shim)
    for _ in range(3):  # kubelet retries a failing pod for ever
        with pytest.raises(FailedPrecondition, match="boom"):
            mgr.run(_request())
    assert store.list(KIND) == []
    assert mgr._pod_locks == {}  # one lock per failed attempt would pile up


_IMAGE = ImageRecord(id="sha256:" + "1" * 64, manifest_digest="", config=b"{}", chain_id="",
                     size=0, pinned=False, annotations={}, runtime_handler="", created_at=0,
                     repo_digests=["docker.io/library/busybox@sha256:" + "2" * 64])


class _Images:
    def resolve(self, ref: str) -> ImageRecord:
        return _IMAGE

    def image_config(self, image_id: str) -> ImageConfig:
        return ImageConfig({})

    def rootfs_layers(self, image_id: str) -> list[str]:
        return []


def test_pod_removal_waits_for_a_container_being_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RemovePodSandbox arriving while CreateContainer is inside the pod's shim must not
    finish first: the container would be recorded (with its files) in a pod that is gone."""
    import threading

    from cri_server.containers import manager as container_manager
    from cri_server.containers import record as container_record
    from cri_server.containers.manager import ContainerManager

    monkeypatch.setattr(pod_cgroup, "create", lambda cg, resources=None: None)
    monkeypatch.setattr(pod_cgroup, "remove", lambda cg, timeout=5.0: None)
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    monkeypatch.setattr(sandbox_manager.shim_process, "is_shim_of", lambda pid, d: True)
    spec = ContainerSpec.from_json({"id": "c", "rootfs": {"lower": ["/l"], "upper": "/c/u",
                                                          "work": "/c/w"},
                                    "process": {"args": ["sh"]}})
    monkeypatch.setattr(container_manager.spec_builder, "build", lambda *a, **k: spec)
    store = Store(tmp_path / "runtime.db")
    paths = Paths(tmp_path / "root", tmp_path / "state")
    pods = SandboxManager(Config(), paths, store, None, lambda spec: {"pid": 1})
    cm = ContainerManager(store, paths, pods, _Images())
    pods.containers = cm
    pod_id = pods.run(_request())
    remover_done = threading.Event()

    def remove_pod() -> None:
        pods.stop(pod_id)
        pods.remove(pod_id)
        remover_done.set()

    class Shim:
        def __init__(self, shim_dir: str, timeout: float = 0) -> None:
            pass

        def create(self, cid: str, spec: dict[str, Any]) -> CreateReply:
            threading.Thread(target=remove_pod, daemon=True).start()
            remover_done.wait(0.5)  # without the guard the removal ends meanwhile
            return CreateReply(0)

        def delete(self, cid: str) -> bool:
            return True

    monkeypatch.setattr(container_manager, "ShimClient", Shim)
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="c"), image=api_pb2.ImageSpec(image="busybox")))
    cm.create(request)
    assert remover_done.wait(10)
    assert store.list(KIND) == [] and store.list(container_record.KIND) == []
    assert cm.records() == []
    assert list((tmp_path / "root" / "containers").iterdir()) == []


def test_a_reader_noticing_a_dead_shim_never_overwrites_a_newer_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ListPodSandbox read the READY record before StopPodSandbox saved its own; when the
    reader then sees the shim gone it must not write its older copy over Stop's."""
    from cri_server.sandboxes.record import READY, SandboxRecord
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    monkeypatch.setattr(sandbox_manager.shim_process, "is_shim_of", lambda pid, d: False)
    events: list[int] = []
    store = Store(tmp_path / "runtime.db")
    mgr = SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"), store, None,
                         lambda spec: {})
    mgr.event_sink = lambda kind, rec: events.append(kind)
    plan = sandbox_manager.validate.plan(_request(), [], "node")
    rec = mgr._new_record(_request(), plan, "digest")
    rec.state, rec.network_ready = READY, True
    store.insert(KIND, rec.id, rec.name_key, rec.to_json())
    seen_by_reader = SandboxRecord.from_json(_row(store, rec.id))
    rec.state, rec.network_ready = NOTREADY, False                   # StopPodSandbox saves
    store.update(KIND, rec.id, rec.to_json())
    assert mgr._refresh(seen_by_reader).state == NOTREADY
    assert _row(store, rec.id)["network_ready"] is False
    assert events == []            # Stop publishes its own event; no second one
    fresh = SandboxRecord.from_json({**rec.to_json(), "state": READY})   # a shim that died
    store.update(KIND, rec.id, fresh.to_json())
    assert mgr._refresh(fresh).state == NOTREADY
    assert _row(store, rec.id)["state"] == NOTREADY and events == [api_pb2.CONTAINER_STOPPED_EVENT]


class _SlowCni:
    """A CNI whose ADD is still running when the shim side of RunPodSandbox fails."""

    def __init__(self, may_finish: Any) -> None:
        self.may_finish = may_finish
        self.cached: set[str] = set()
        self.allocated: set[str] = set()   # pod ids holding an IP

    def setup(self, pod_id: str, netns: str, meta: Any, ports: Any) -> Any:
        import time
        assert self.may_finish.wait(10)
        time.sleep(0.2)   # the ADD's last plugin: the IP is allocated, the result cached
        self.allocated.add(pod_id)
        self.cached.add(pod_id)
        return None

    def teardown(self, pod_id: str, netns: Any, meta: Any = None, ports: Any = None, *,
                 force: bool = False) -> list[Any]:
        self.allocated.discard(pod_id)
        self.cached.discard(pod_id)
        return []

    def cached_pod_ids(self) -> set[str]:
        return set(self.cached)

    def cached_result(self, pod_id: str) -> Any:
        return None


def test_failure_after_the_shim_waits_for_add_and_releases_the_ip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shim is up, the step after it fails (systemd: the pause-holder's scope) while CNI
    ADD still runs beside it: the undo must wait for the ADD, or it finds no CNI state to DEL
    and the ADD then allocates an IP nobody ever releases (the VM leg's leaked host-local IP)."""
    import threading

    may_finish = threading.Event()

    def scope_fails(cg: Any, pod_id: str, pid: int) -> None:
        may_finish.set()
        raise FailedPrecondition("the pause-holder's scope did not start: job timed out")

    monkeypatch.setattr(pod_cgroup, "create", lambda cg, resources=None: None)
    monkeypatch.setattr(pod_cgroup, "remove", lambda cg, pod_id="", timeout=5.0: None)
    monkeypatch.setattr(pod_cgroup, "start_pause_scope", scope_fails)
    monkeypatch.setattr(sandbox_manager.netns, "create", lambda path: None)
    monkeypatch.setattr(sandbox_manager.netns, "remove", lambda path: None)
    monkeypatch.setattr(sandbox_manager.podfiles, "host_hostname", lambda: "node")
    cni = _SlowCni(may_finish)
    store = Store(tmp_path / "runtime.db")
    mgr = SandboxManager(Config(), Paths(tmp_path / "root", tmp_path / "state"), store,
                         cni, lambda spec: {})  # type: ignore[arg-type]
    request = _request()
    request.config.linux.security_context.namespace_options.network = api_pb2.POD
    with pytest.raises(FailedPrecondition, match="job timed out"):
        mgr.run(request)
    mgr._network_pool.shutdown(wait=True)   # whatever ADD was left running has ended now
    assert cni.allocated == set() and cni.cached == set()
    assert store.list(KIND) == []
