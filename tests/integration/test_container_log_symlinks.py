"""Container log paths are never followed through a symlink below the pod's log directory:
CreateContainer and ReopenContainerLog refuse one (naming it), and nothing is written outside."""
from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error
from tests.support.pods import wait_until

TICKER = ["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.05; done"]


def _names(env: ContainerEnv) -> list[str]:
    flt = api_pb2.ContainerFilter(pod_sandbox_id=env.pod_id)
    return [c.metadata.name for c in env.cri.ListContainers(
        api_pb2.ListContainersRequest(filter=flt)).containers]


@pytest.mark.parametrize(("log_path", "link_name"), [("evil.log", "evil.log"),
                                                    ("sub/deeper/0.log", "sub")])
def test_symlink_below_the_log_directory_is_refused(container_env: ContainerEnv, tmp_path: Path,
                                                    log_path: str, link_name: str) -> None:
    env = container_env
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "file").write_text("host data\n")
    link = env.log_dir / link_name
    link.symlink_to(host_dir / "file" if link_name.endswith(".log") else host_dir)
    cfg = env.config(["echo", "pwned"], name=f"evil-{link_name.replace('.', '-')}")
    cfg.log_path = log_path
    try:
        err = rpc_error(env.create, cfg)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert str(link) in (err.details() or "") and "symlink" in (err.details() or "")
        assert cfg.metadata.name not in _names(env)       # no record left
    finally:
        link.unlink()
    # nothing was written or made outside; the name is free again: the same config now works
    assert [p.name for p in host_dir.iterdir()] == ["file"]
    assert (host_dir / "file").read_text() == "host data\n"
    cid = env.create(cfg)
    env.start_container(cid)
    env.wait_exit(cid)
    assert env.log_path(cid) == env.log_dir / log_path
    assert env.log_lines(cid) == [("stdout", "pwned\n")]
    env.remove(cid)


def test_sub_directories_of_a_log_path_are_created(container_env: ContainerEnv) -> None:
    env = container_env
    cfg = env.config(["echo", "nested"], name="nested")
    cfg.log_path = "a/b/c/0.log"
    cid = env.create(cfg)
    env.start_container(cid)
    env.wait_exit(cid)
    assert env.log_path(cid) == env.log_dir / "a/b/c/0.log"
    assert env.log_lines(cid) == [("stdout", "nested\n")]
    env.remove(cid)


def test_symlinked_log_directory_itself_is_followed(container_env: ContainerEnv,
                                                    tmp_path: Path) -> None:
    # the pod's log directory is kubelet's (trusted, like containerd and CRI-O do)
    env = container_env
    real = tmp_path / "real-logs"
    real.mkdir()
    linked = tmp_path / "pod-logs"
    linked.symlink_to(real)
    pod_config = api_pb2.PodSandboxConfig()
    pod_config.CopyFrom(env.pod_config)
    pod_config.log_directory = str(linked)
    cid = env.create(env.config(["echo", "followed"], name="linkeddir"), pod_config=pod_config)
    env.start_container(cid)
    env.wait_exit(cid)
    assert env.log_lines(cid, real / "linkeddir" / "0.log") == [("stdout", "followed\n")]
    env.remove(cid)


def test_reopen_refuses_a_log_path_replaced_by_a_symlink(container_env: ContainerEnv,
                                                         tmp_path: Path) -> None:
    env = container_env
    victim = tmp_path / "host-file"
    victim.write_text("host data\n")
    cid = env.run(TICKER, name="reopen")
    path = env.log_path(cid)
    assert wait_until(lambda: path.exists() and path.stat().st_size > 0)
    rotated = path.with_name("0.log.1")
    os.rename(path, rotated)
    path.symlink_to(victim)
    err = rpc_error(env.cri.ReopenContainerLog,
                    api_pb2.ReopenContainerLogRequest(container_id=cid))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert str(path) in (err.details() or "") and "symlink" in (err.details() or "")
    # the container keeps logging into the file it had; nothing reaches the host file
    size = rotated.stat().st_size
    assert wait_until(lambda: rotated.stat().st_size > size)
    assert victim.read_text() == "host data\n"
    path.unlink()
    env.cri.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid))
    assert wait_until(lambda: path.exists() and path.stat().st_size > 0)
    assert not path.is_symlink() and victim.read_text() == "host data\n"
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=2))
    env.remove(cid)
