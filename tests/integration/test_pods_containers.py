"""Pod sandboxes with containers in them: shared namespaces, stop/remove take the containers along."""
from __future__ import annotations

import grpc

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error


def test_pod_pid_namespace_shared_with_containers(container_env: ContainerEnv) -> None:
    env = container_env
    cfg = pods.pod_config(pid=api_pb2.POD, hostname="shared-pid")
    pod_id = pods.run_pod(env.cri, cfg)
    try:
        linux = api_pb2.LinuxContainerConfig(security_context=api_pb2.LinuxContainerSecurityContext(
            namespace_options=api_pb2.NamespaceOption(pid=api_pb2.POD)))
        cid = env.create(env.config(["sleep", "1000"], linux=linux), pod_id=pod_id, pod_config=cfg)
        env.start_container(cid)
        r = env.exec_sync(cid, ["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname"])
        lines = r.stdout.decode().split("\n")
        assert lines[0].startswith("pycri-pause"), lines   # PID 1 of the pod is the pause-holder
        assert lines[1] == "shared-pid"
        resp = pods.status(env.cri, pod_id)
        assert [(c.id, c.state) for c in resp.containers_statuses] == [
            (cid, api_pb2.CONTAINER_RUNNING)]
    finally:
        pods.stop_and_remove(env.cri, pod_id)


def test_stop_and_remove_take_containers_along(container_env: ContainerEnv) -> None:
    env = container_env
    cfg = pods.pod_config()
    pod_id = pods.run_pod(env.cri, cfg)
    cids = []
    # SIGTERM ends them: sleep as PID 1 of its PID namespace would wait for the SIGKILL
    honours_term = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
    for _ in range(2):
        cid = env.create(env.config(honours_term), pod_id=pod_id, pod_config=cfg)
        env.start_container(cid)
        cids.append(cid)
    pods.stop(env.cri, pod_id)
    for cid in cids:
        assert env.status(cid).state == api_pb2.CONTAINER_EXITED
    assert pods.status(env.cri, pod_id).status.state == api_pb2.SANDBOX_NOTREADY
    pods.remove(env.cri, pod_id)
    for cid in cids:
        err = rpc_error(env.status, cid)
        assert err.code() == grpc.StatusCode.NOT_FOUND
        env.created.remove(cid)
    listed = env.cri.ListContainers(api_pb2.ListContainersRequest(
        filter=api_pb2.ContainerFilter(pod_sandbox_id=pod_id))).containers
    assert list(listed) == []
