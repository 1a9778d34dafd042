"""Huge client values (ids, image references) in errors and log lines: the client gets the real
status code with a short message, and no daemon log line grows with the input."""
from __future__ import annotations

import grpc

from proto import api_pb2
from tests.support.cri_client import rpc_error

LONG_ID = "f" * 17_000        # over the 16 KiB a client accepts in a status header
HUGE_ID = "e" * 1_000_000
LONG_REF = "x" * 100_000
MAX_STATUS_MESSAGE = 4096 + 100
MAX_LOG_LINE = 16 * 1024


def _not_found(exc: grpc.RpcError) -> None:
    assert exc.code() == grpc.StatusCode.NOT_FOUND, (exc.code(), exc.details()[:200])
    assert len(exc.details()) < MAX_STATUS_MESSAGE
    assert "bytes)" in exc.details()


def test_unknown_long_container_id_is_not_found(cri) -> None:  # type: ignore[no-untyped-def]
    _not_found(rpc_error(cri.ContainerStatus,
                         api_pb2.ContainerStatusRequest(container_id=LONG_ID)))
    _not_found(rpc_error(cri.StartContainer, api_pb2.StartContainerRequest(container_id=LONG_ID)))
    # RemoveContainer of an unknown id succeeds (kubelet retries removals)
    cri.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=LONG_ID))


def test_unknown_long_pod_id_is_not_found(cri) -> None:  # type: ignore[no-untyped-def]
    _not_found(rpc_error(cri.PodSandboxStatus,
                         api_pb2.PodSandboxStatusRequest(pod_sandbox_id=LONG_ID)))


def test_long_image_reference_is_invalid(cri) -> None:  # type: ignore[no-untyped-def]
    for call, request in ((cri.ImageStatus, api_pb2.ImageStatusRequest),
                          (cri.PullImage, api_pb2.PullImageRequest)):
        exc = rpc_error(call, request(image=api_pb2.ImageSpec(image=LONG_REF)))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details()[:200])
        assert "name longer than" in exc.details()
        assert len(exc.details()) < MAX_STATUS_MESSAGE


def test_a_megabyte_id_makes_no_megabyte_log_line(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    _not_found(rpc_error(cri.ContainerStatus,
                         api_pb2.ContainerStatusRequest(container_id=HUGE_ID)))
    cri.StopContainer(api_pb2.StopContainerRequest(container_id=HUGE_ID))  # logged, not an error
    cri.Version(api_pb2.VersionRequest())  # the log has everything before this call
    with open(daemon.log_path, "rb") as f:
        lengths = [len(line) for line in f]
    assert lengths and max(lengths) <= MAX_LOG_LINE
