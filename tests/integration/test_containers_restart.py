"""Containers across daemon crashes: running ones keep running, exits that happen while the
daemon is down are reported, a dead shim makes its containers EXITED, and a create
interrupted by a crash leaves nothing behind."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error
from tests.support.daemon import PycriDaemon


def _shim_dir(env: ContainerEnv) -> Path:
    return Path(pods.info(env.cri, env.pod_id)["shimDir"])


def test_daemon_kill9_keeps_containers_and_records_exits(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    long = env.run(["sleep", "1000"])
    short = env.run(["sh", "-c", "sleep 1; exit 7"])
    created = env.create(env.config(["sleep", "1000"]))
    long_pid = env.info(long)["pid"]
    d.kill9()
    time.sleep(1.5)                      # `short` exits while the daemon is down
    d.start()
    env.cri = d.c
    assert os.path.exists(f"/proc/{long_pid}")
    st = env.status(long)
    assert st.state == api_pb2.CONTAINER_RUNNING and env.info(long)["pid"] == long_pid
    st = env.status(short)
    assert (st.state, st.exit_code, st.reason) == (api_pb2.CONTAINER_EXITED, 7, "Error")
    assert env.status(created).state == api_pb2.CONTAINER_CREATED
    listed = {c.id for c in env.cri.ListContainers(api_pb2.ListContainersRequest()).containers}
    assert {long, short, created} <= listed
    assert env.exec_sync(long, ["echo", "alive"]).stdout == b"alive\n"
    env.start_container(created)
    assert env.status(created).state == api_pb2.CONTAINER_RUNNING
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=long, timeout=0))
    assert env.status(long).exit_code == 137


def test_dead_shim_leaves_containers_running_until_stopped(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """A container whose shim died and could not be adopted (its pause-holder is gone too)
    runs on under its keeper: RUNNING (not a made-up exit) until StopContainer kills it
    through its cgroup; its keeper records the 137."""
    _, env = started
    cid = env.run(["sleep", "1000"])
    pid = env.info(cid)["pid"]
    shim_pid = int((_shim_dir(env) / "shim.pid").read_text())
    os.kill(int((_shim_dir(env) / "pause.pid").read_text()), signal.SIGKILL)
    os.kill(shim_pid, signal.SIGKILL)
    time.sleep(0.5)
    st = env.status(cid)
    assert st.state == api_pb2.CONTAINER_RUNNING and env.info(cid)["pid"] == pid
    err = rpc_error(env.exec_sync, cid, ["true"])
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    deadline = time.monotonic() + 10
    while env.status(cid).state != api_pb2.CONTAINER_EXITED:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    st = env.status(cid)
    assert (st.exit_code, st.reason) == (137, "Error")
    env.remove(cid)


def test_container_outlives_kill9_of_its_shim_and_its_exit_is_recorded(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """Its keeper, not the shim, is the container's parent: kill -9 of the shim leaves the
    container and the pod's pause-holder running, and an exit while no shim runs reaches
    ContainerStatus with its real code (not the 255 of a container whose fate is unknown).
    Stopping the pod then leaves no keeper or pause-holder behind."""
    _, env = started
    script = "trap 'exit 9' TERM; while :; do sleep 0.05; done"
    cid = env.run(["sh", "-c", script])
    other = env.run(["sleep", "1000"])
    shim_dir = _shim_dir(env)
    pid, other_pid = env.info(cid)["pid"], env.info(other)["pid"]
    keepers = [int((shim_dir / "containers" / f"{c}.keeper").read_text()) for c in (cid, other)]
    pause_pid = int((shim_dir / "pause.pid").read_text())
    container_cg = Path(f"/proc/{pid}/cgroup").read_text()
    assert cid in container_cg  # the container's own cgroup (its id names it)
    for k in keepers:  # back in the cgroups the init started in: never the container's
        assert Path(f"/proc/{k}/cgroup").read_text() != container_cg
    os.kill(int((shim_dir / "shim.pid").read_text()), signal.SIGKILL)
    time.sleep(0.5)
    for p in (pid, other_pid, pause_pid, *keepers):
        assert os.path.exists(f"/proc/{p}"), p
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while env.status(cid).exit_code != 9:
        assert time.monotonic() < deadline, env.status(cid)
        time.sleep(0.1)
    st = env.status(cid)
    assert (st.state, st.reason) == (api_pb2.CONTAINER_EXITED, "Error")
    assert st.finished_at >= st.started_at > 0
    env.cri.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=env.pod_id))
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") and not _zombie(p)
              for p in (other_pid, pause_pid, *keepers)):
        assert time.monotonic() < deadline, "a keeper or the pause-holder outlived StopPodSandbox"
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_crash_during_create_leaves_nothing(started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    cfg = env.config(["sleep", "1000"], name="crashy")
    for point in ("container_create_reserved", "container_create_shim"):
        d.stop()
        d.start(extra_env={"PYCRI_CRASH_AT": point})
        env.cri = d.c
        with pytest.raises(grpc.RpcError):
            env.create(cfg)
        d.proc.wait(10)  # type: ignore[union-attr]
        d.proc = None
        d.start()
        env.cri = d.c
        assert env.cri.ListContainers(api_pb2.ListContainersRequest()).containers == []
        assert list((d.root / "containers").iterdir()) == []
        shim_states = _shim_dir(env) / "containers"
        assert not shim_states.exists() or list(shim_states.iterdir()) == []
    env.created.clear()
    cid = env.create(cfg)                # the name was released
    env.start_container(cid)
    assert env.status(cid).state == api_pb2.CONTAINER_RUNNING
