"""Files a client names (a Localhost seccomp profile) are opened without blocking: a FIFO there
is refused at once and never holds an RPC worker."""
from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from tests.support.containers import ContainerEnv, security
from tests.support.cri_client import rpc_error

SP = api_pb2.SecurityProfile


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        yield e


def _release_readers(fifo: Path) -> None:
    """Gives EOF to whoever waits in open() of the FIFO (the old code did), so a failing run
    does not leave daemon workers blocked for good."""
    for _ in range(20):
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as e:
            if e.errno != errno.ENXIO:   # ENXIO: nobody has it open for reading
                raise
            return
        time.sleep(0.2)


def test_seccomp_profile_that_is_a_fifo_is_refused(env: ContainerEnv, daemon, tmp_path: Path  # type: ignore[no-untyped-def]
                                                   ) -> None:
    fifo = tmp_path / "profile.json"
    os.mkfifo(fifo)
    linux = api_pb2.LinuxContainerConfig(security_context=security(
        seccomp=SP(profile_type=SP.Localhost, localhost_ref=str(fifo))))

    def create(i: int) -> grpc.RpcError:
        cfg = env.config(["true"], name=f"fifo-{i}", linux=linux)
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=env.pod_id, config=cfg,
                                             sandbox_config=env.pod_config)
        # the deadline only keeps a failing run finite; the answer is expected at once
        return rpc_error(daemon.c.call, "CreateContainer", req, 30)
    try:
        with ThreadPoolExecutor(8) as pool:
            errs = list(pool.map(create, range(8)))
    finally:
        _release_readers(fifo)
    for err in errs:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert f"seccomp profile {fifo}: is a FIFO, not a regular file" in err.details()
    assert daemon.c.Version(api_pb2.VersionRequest()).runtime_name
    # the names were not left reserved
    cfg = env.config(["true"], name="fifo-0")
    assert env.create(cfg)
