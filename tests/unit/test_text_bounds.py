"""Echoed client values are cut: the shorten/clip helpers, the log filter, the interceptor."""
from __future__ import annotations

import logging

import grpc
import pytest

from cri_server import interceptor, logsetup
from pycri_common.errors import NotFound
from pycri_common.text import clip, shorten


def test_shorten_keeps_short_values_as_repr() -> None:
    assert shorten("abc") == "'abc'"
    assert shorten(b"\x00") == "b'\\x00'"


def test_shorten_cuts_long_values_and_counts_bytes() -> None:
    out = shorten("é" * 1000, limit=10)
    assert out == f"{'é' * 10!r}… (2000 bytes)"
    assert shorten(b"x" * 500, limit=4) == "b'xxxx'… (500 bytes)"


def test_clip() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcdef", 3) == "abc… (3 more characters cut)"


def test_log_filter_bounds_message_and_traceback_lines() -> None:
    try:
        raise ValueError("v" * 100_000)
    except ValueError as exc:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "%s", ("m" * 100_000,),
                                   (type(exc), exc, exc.__traceback__))
    assert logsetup.BoundedLines().filter(record)
    for formatter in (logsetup.TextFormatter(), logsetup.JsonFormatter()):
        text = formatter.format(record)
        assert len(text) < 3 * logsetup.MAX_LOG_MESSAGE
        assert "ValueError" in text


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.details = ""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.details = details
        raise _Aborted

    def code(self) -> None:
        return None


def test_interceptor_cuts_long_status_messages() -> None:
    ctx = _Context()
    with pytest.raises(_Aborted):
        interceptor.RpcInterceptor(None)._fail(  # type: ignore[arg-type]
            "ContainerStatus", NotFound("x" * 100_000), ctx)  # type: ignore[arg-type]
    assert ctx.details.startswith("ContainerStatus: xxx")
    assert len(ctx.details) < interceptor.MAX_STATUS_MESSAGE + 100
