"""Container records: JSON round trip, shim state application, CRI conversion and filters."""
from __future__ import annotations

from cri_server.containers import convert
from cri_server.containers import record as R
from cri_server.containers.record import ContainerRecord
from proto import api_pb2
from runtime.shim.protocol import ContainerState


def _rec(**kw: object) -> ContainerRecord:
    base: dict[str, object] = {"id": "a" * 64, "pod_id": "p" * 64, "name": "c", "attempt": 1,
                               "image": "busybox", "image_id": "sha256:" + "i" * 64,
                               "labels": {"app": "x", "tier": "web"}, "created_at": 5}
    base.update(kw)
    return ContainerRecord(**base)  # type: ignore[arg-type]


def _state(obj: dict[str, object]) -> ContainerState:
    return ContainerState.from_json(obj)


def test_json_round_trip_ignores_unknown_keys() -> None:
    rec = _rec(state=R.RUNNING, user={"uid": 1, "gid": 2, "groups": [2, 3]})
    data = rec.to_json()
    data["from_a_newer_version"] = True
    assert ContainerRecord.from_json(data) == rec
    assert rec.name_key == f"{'p' * 64}/c/1"


def test_apply_state_transitions() -> None:
    rec = _rec(state=R.CREATED)
    assert rec.apply_state(_state({"state": "running", "pid": 42, "started_at": 10}))
    assert (rec.state, rec.pid, rec.started_at) == (R.RUNNING, 42, 10)
    assert not rec.apply_state(_state({"state": "running", "pid": 42, "started_at": 10}))
    assert rec.apply_state(_state({"state": "exited", "exit_code": 0, "reason": "Completed",
                                   "finished_at": 20}))
    assert (rec.state, rec.exit_code, rec.reason, rec.finished_at) == (R.EXITED, 0,
                                                                        "Completed", 20)


def test_a_stale_state_never_moves_a_container_back() -> None:
    """Two threads refresh at once; the one that read the older status file applies last."""
    rec = _rec(state=R.CREATED)
    assert rec.apply_state(_state({"state": "exited", "exit_code": 3, "reason": "Error",
                                   "started_at": 10, "finished_at": 20, "pid": 42}))
    assert not rec.apply_state(_state({"state": "running", "pid": 42, "started_at": 10}))
    assert not rec.apply_state(_state({"state": "created", "pid": 42}))
    assert (rec.state, rec.exit_code, rec.finished_at) == (R.EXITED, 3, 20)


def test_status_conversion() -> None:
    rec = _rec(state=R.EXITED, exit_code=137, reason="OOMKilled", message="m",
               image_ref="r@sha256:" + "d" * 64, stop_signal=api_pb2.SIGINT,
               mounts=[{"container_path": "/d", "host_path": "/h", "readonly": True,
                        "propagation": api_pb2.PROPAGATION_HOST_TO_CONTAINER}],
               resources={"cpu_shares": 2, "memory_limit_in_bytes": 10,
                          "hugepage_limits": [{"page_size": "2MB", "limit": 4}]},
               user={"uid": 7, "gid": 8, "groups": [8, 9]})
    st = convert.status(rec)
    assert st.state == api_pb2.CONTAINER_EXITED and st.exit_code == 137
    assert st.reason == "OOMKilled" and st.message == "m" and st.stop_signal == api_pb2.SIGINT
    assert st.image.image == "busybox" and st.image_ref.startswith("r@")
    assert st.mounts[0].propagation == api_pb2.PROPAGATION_HOST_TO_CONTAINER
    assert st.resources.linux.cpu_shares == 2
    assert st.resources.linux.hugepage_limits[0].page_size == "2MB"
    assert list(st.user.linux.supplemental_groups) == [8, 9]
    running = convert.status(_rec(state=R.RUNNING, exit_code=3, reason="Error"))
    assert running.exit_code == 0 and running.reason == ""   # only exited ones report them
    assert convert.container(_rec()).image_ref == "sha256:" + "i" * 64  # no digest: the ID


def test_filters() -> None:
    rec = _rec(state=R.RUNNING)
    F = api_pb2.ContainerFilter
    running = api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING)
    exited = api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_EXITED)
    assert convert.matches(rec, None) and convert.matches(rec, F())
    assert convert.matches(rec, F(id="aaa", pod_sandbox_id="ppp", state=running,
                                  label_selector={"app": "x"}))
    assert not convert.matches(rec, F(id="b"))
    assert not convert.matches(rec, F(pod_sandbox_id="q"))
    assert not convert.matches(rec, F(state=exited))
    assert not convert.matches(rec, F(label_selector={"app": "y"}))
    assert convert.matches(_rec(state=R.CREATED), F(state=api_pb2.ContainerStateValue(
        state=api_pb2.CONTAINER_CREATED)))


def test_stored_text_is_the_record_and_follows_every_change() -> None:
    import json

    rec = ContainerRecord(id="c1", pod_id="p1", name="n", attempt=0, image="busybox",
                          labels={"a": "1"}, spec={"process": {"args": ["sleep", "1"]}})
    assert json.loads(rec.to_json_text()) == rec.to_json()
    rec.state = "running"
    rec.labels["b"] = "2"
    rec.user = {"uid": 0}
    assert json.loads(rec.to_json_text()) == rec.to_json()
    rec.spec = {**rec.spec, "cgroup": {"path": "/x"}}  # replaced (UpdateContainerResources)
    assert json.loads(rec.to_json_text())["spec"] == {"process": {"args": ["sleep", "1"]},
                                                       "cgroup": {"path": "/x"}}
    assert ContainerRecord.from_json(json.loads(rec.to_json_text())) == rec
    rec.spec = {}
    assert json.loads(rec.to_json_text()) == rec.to_json()
