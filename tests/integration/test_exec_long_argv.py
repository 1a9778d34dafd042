"""Long exec and container command lines: whatever execve(2) accepts arrives whole (the request to
the shim is sent completely, however large), more than it accepts is INVALID_ARGUMENT."""
from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from proto import api_pb2
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error

ARG = 100_000  # below the kernel's 128 KiB per argument


@pytest.fixture(scope="module")
def box(container_env: ContainerEnv) -> Iterator[str]:
    cid = container_env.run(["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"])
    yield cid
    container_env.remove(cid)


def _args(n: int, size: int = ARG) -> list[str]:
    return [chr(ord("a") + i % 26) * size for i in range(n)]


def test_exec_sync_with_a_long_argv_returns_its_output(container_env: ContainerEnv,
                                                       box: str) -> None:
    args = _args(3)  # 300 KB: more than a unix socket takes in one send
    resp = container_env.exec_sync(box, ["echo", *args], timeout=10)
    assert resp.exit_code == 0, resp.stderr[-500:]
    assert resp.stdout == (" ".join(args) + "\n").encode()


def test_exec_sync_with_one_argument_over_the_kernel_limit(container_env: ContainerEnv,
                                                           box: str) -> None:
    err = rpc_error(container_env.exec_sync, box, ["echo", "x" * 200_000], timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "131072" in (err.details() or "") or "131071" in (err.details() or "")
    assert len(err.details() or "") < 1000  # the argument is not echoed back


def test_exec_sync_and_exec_with_an_argv_over_arg_max(container_env: ContainerEnv,
                                                      box: str) -> None:
    # 7 MB: over ARG_MAX whatever the stack limit (the kernel caps it at 6 MiB)
    args = ["echo", *_args(70)]
    err = rpc_error(container_env.exec_sync, box, args, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "ARG_MAX" in (err.details() or "") and len(err.details() or "") < 1000
    err = rpc_error(container_env.cri.Exec, api_pb2.ExecRequest(
        container_id=box, cmd=args, stdout=True))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    err = rpc_error(container_env.cri.Exec, api_pb2.ExecRequest(
        container_id=box, cmd=["echo", "x" * 200_000], stdout=True))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()


def test_create_container_with_a_long_command_and_env(container_env: ContainerEnv) -> None:
    env = container_env
    args = _args(3)
    cid = env.run(["echo", *args], envs=[api_pb2.KeyValue(key="BIG", value=b"v" * ARG)])
    st = env.wait_exit(cid)
    assert st.exit_code == 0
    assert env.log_lines(cid) == [("stdout", " ".join(args) + "\n")]
    env.remove(cid)


@pytest.mark.parametrize("what", ["args", "command", "env"])
def test_create_container_over_the_kernel_limit(container_env: ContainerEnv, what: str) -> None:
    env = container_env
    cfg = env.config(["echo"], name=f"huge-{what}")
    if what == "args":
        cfg.args.extend(_args(70))
    elif what == "command":
        cfg.command.append("x" * 200_000)
    else:
        cfg.envs.append(api_pb2.KeyValue(key="HUGE", value=b"v" * 200_000))
    err = rpc_error(env.create, cfg)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert len(err.details() or "") < 1000
    names = [c.metadata.name for c in env.cri.ListContainers(
        api_pb2.ListContainersRequest()).containers]
    assert f"huge-{what}" not in names
