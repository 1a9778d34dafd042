"""The one wrapper around every RPC.

It logs the call with its duration, answers UNAVAILABLE until start-up
recovery has finished, and maps the project's typed errors (pycri_common.errors)
to gRPC status codes. Servicers therefore just raise.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from pycri_common.errors import PycriError
from pycri_common.text import clip

log = logging.getLogger(__name__)

# Observers get (method, code name, seconds); the metrics module subscribes.
RpcObserver = Callable[[str, str, float], None]

# A status message travels in a response header (grpc-message): clients refuse headers over
# 8-16 KiB (RESOURCE_EXHAUSTED instead of the real status), so a longer message is cut.
MAX_STATUS_MESSAGE = 4096
# What of an error the request log line shows.
MAX_LOGGED_ERROR = 1024


class RpcInterceptor(grpc.ServerInterceptor):
    def __init__(self, ready: threading.Event) -> None:
        self._ready = ready
        self.observers: list[RpcObserver] = []

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # the CRI has no client-streaming RPCs

    # -- helpers -------------------------------------------------------------
    def _check_ready(self, method: str, context: grpc.ServicerContext) -> None:
        if not self._ready.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"{method}: pycri is still recovering its state after start-up; retry shortly")

    def _fail(self, method: str, exc: Exception, context: grpc.ServicerContext) -> str:
        """Turns exc into a gRPC status and raises; returns nothing."""
        if isinstance(exc, PycriError):
            log.info("rpc %s failed: %s: %s", method, exc.code_name, clip(str(exc), MAX_LOGGED_ERROR))
            context.abort(grpc.StatusCode[exc.code_name], clip(f"{method}: {exc}", MAX_STATUS_MESSAGE))
        already = context.code()
        if already not in (None, grpc.StatusCode.OK):
            raise exc  # context.abort() was called by the servicer: keep its status
        log.exception("rpc %s failed unexpectedly", method)
        context.abort(grpc.StatusCode.INTERNAL,
                      clip(f"{method}: internal error: {exc!r}", MAX_STATUS_MESSAGE))
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, method: str, context: grpc.ServicerContext, failed: bool,
                 started: float) -> None:
        elapsed = time.monotonic() - started
        code = context.code()
        name = "OK" if not failed else (code.name if code is not None else "UNKNOWN")
        log.debug("rpc %s %s in %.1f ms", method, name, elapsed * 1000)
        for observer in self.observers:
            observer(method, name, elapsed)

    def _wrap_unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            failed = True
            try:
                self._check_ready(method, context)
                response = behavior(request, context)
                failed = False
                return response
            except Exception as exc:  # noqa: BLE001 - every failure becomes a gRPC status
                self._fail(method, exc, context)
            finally:
                self._observe(method, context, failed, started)
        return call

    def _wrap_stream(self, method: str, behavior: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.monotonic()
            failed = True
            try:
                self._check_ready(method, context)
                yield from behavior(request, context)
                failed = False
            except Exception as exc:  # noqa: BLE001 - every failure becomes a gRPC status
                self._fail(method, exc, context)
            finally:
                self._observe(method, context, failed, started)
        return call
