"""A CRI client over the generated stubs, as kubelet and crictl use the API."""
from __future__ import annotations

from typing import Any

import grpc

from proto import api_pb2, api_pb2_grpc


class CriClient:
    def __init__(self, socket_path: str, timeout: float = 60.0,
                 max_receive: int = 64 * 1024 * 1024) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            options=[("grpc.max_receive_message_length", max_receive)])
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.image = api_pb2_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, name: str, request: Any, timeout: float | None = None) -> Any:
        """Calls an RPC of either service by name: client.call("Version", VersionRequest())."""
        stub = self.runtime if hasattr(self.runtime, name) else self.image
        return getattr(stub, name)(request, timeout=timeout or self.timeout)

    def __getattr__(self, name: str) -> Any:
        # client.Version(req) / client.PullImage(req): dispatch to whichever service has it.
        if name[:1].isupper():
            return lambda request, timeout=None: self.call(name, request, timeout)
        raise AttributeError(name)

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)


def rpc_error(fn: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    """Calls fn expecting a gRPC error and returns it (fails if the call succeeded)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded but an error was expected")


__all__ = ["CriClient", "rpc_error", "api_pb2"]
