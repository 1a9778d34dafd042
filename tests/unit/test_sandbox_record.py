"""Sandbox records: JSON round trip, CRI views and list filters (pure logic)."""
from __future__ import annotations

import json

from cri_server.sandboxes import views
from cri_server.sandboxes.record import (
    NOTREADY,
    READY,
    SandboxRecord,
    encode_config,
    request_digest,
)
from proto import api_pb2


def _record(state: str = READY, labels: dict[str, str] | None = None) -> SandboxRecord:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", namespace="ns", uid="u", attempt=1),
        labels=labels or {"app": "web"}, annotations={"a": "b"})
    return SandboxRecord(
        id="ab" * 32, name_key="ns/web/u/1", created_at=123, state=state, phase="ready",
        config_b64=encode_config(cfg), request_digest="d", runtime_handler="pycri",
        namespaces={"network": "pod", "ipc": "pod", "pid": "container"}, hostname="web",
        sysctls={}, port_mappings=[], pod_dir="/p", shim_dir="/s", ns_dir="/n",
        netns_path="/n/net", cgroup_driver="cgroupfs", cgroup_parent="/k", cgroup_path="/k/podu",
        ip="10.0.0.2", additional_ips=["fd00::2"], shim_pid=10, pause_pid=11)


def test_json_round_trip() -> None:
    rec = _record()
    data = json.loads(json.dumps(rec.to_json()))
    back = SandboxRecord.from_json({**data, "field_from_the_future": 1})
    assert back.to_json() == rec.to_json()
    assert back.config.metadata.name == "web" and back.metadata.attempt == 1


def test_status_view() -> None:
    st = views.pod_sandbox_status(_record())
    assert st.state == api_pb2.SANDBOX_READY and st.created_at == 123
    assert st.network.ip == "10.0.0.2" and [p.ip for p in st.network.additional_ips] == ["fd00::2"]
    opts = st.linux.namespaces.options
    assert (opts.network, opts.ipc, opts.pid) == (api_pb2.POD, api_pb2.POD, api_pb2.CONTAINER)
    assert dict(st.labels) == {"app": "web"} and dict(st.annotations) == {"a": "b"}
    assert st.runtime_handler == "pycri"
    assert views.pod_sandbox(_record(NOTREADY)).state == api_pb2.SANDBOX_NOTREADY


def test_verbose_info() -> None:
    info = json.loads(views.verbose_info(_record(), {"ips": []})["info"])
    assert info["pid"] == 11 and info["shimPid"] == 10 and info["netnsPath"] == "/n/net"
    assert info["config"]["metadata"]["name"] == "web" and info["cniResult"] == {"ips": []}


def test_filters() -> None:
    rec = _record(labels={"app": "web", "env": "prod"})
    assert views.matches(rec, None)
    assert views.matches(rec, api_pb2.PodSandboxFilter(id="abab"))
    assert not views.matches(rec, api_pb2.PodSandboxFilter(id="cd"))
    ready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
    notready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_NOTREADY)
    assert views.matches(rec, api_pb2.PodSandboxFilter(state=ready))
    assert not views.matches(rec, api_pb2.PodSandboxFilter(state=notready))
    assert views.matches(rec, api_pb2.PodSandboxFilter(label_selector={"env": "prod"}))
    assert not views.matches(rec, api_pb2.PodSandboxFilter(label_selector={"env": "dev"}))


def test_request_digest_identifies_retries() -> None:
    a = api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(hostname="x"))
    b = api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig(hostname="x"))
    assert request_digest(a) == request_digest(b)
    b.runtime_handler = "pycri"
    assert request_digest(a) != request_digest(b)
