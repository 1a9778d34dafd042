"""The zygote's warm-up of the shim's request path (runtime.shim.warmup): it runs every
reply of the protocol through the real connection and handlers, and leaves nothing behind."""
from __future__ import annotations

import os

import pytest

from pycri_common.errors import PycriError
from runtime.shim import control, protocol, warmup


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_warm_up_sends_every_reply_and_leaves_no_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    replies: list[str] = []
    errors: list[str] = []
    reply, reply_error = control.Connection.reply, control.Connection.reply_error

    def spy_reply(conn: control.Connection, obj: protocol.Reply | dict[str, object]) -> None:
        replies.append(type(obj).__name__)
        reply(conn, obj)  # type: ignore[arg-type]

    def spy_error(conn: control.Connection, err: PycriError) -> None:
        errors.append(err.kind)
        reply_error(conn, err)

    monkeypatch.setattr(control.Connection, "reply", spy_reply)
    monkeypatch.setattr(control.Connection, "reply_error", spy_error)
    before = _fds()
    warmup.warm_up(rounds=2)
    # fds the warm-up left open (other threads of the test process may close theirs meanwhile)
    assert _fds() - before == set()
    every_reply = {cls.__name__ for cls in (
        protocol.HelloReply, protocol.StateReply, protocol.Empty, protocol.ContainerState,
        protocol.CreateReply, protocol.StartReply, protocol.ExecReply, protocol.ExecWaitReply,
        protocol.DeleteReply)}
    assert set(replies) == every_reply
    assert replies.count("CreateReply") == 2  # the lifecycle ran once per round
    assert set(errors) == {"FailedPrecondition", "AlreadyExists", "NotFound", "InvalidArgument"}


def test_warm_up_touches_no_pod_directory() -> None:
    assert not os.path.exists(os.path.dirname(warmup._DIR))
    warmup.warm_up(rounds=1)
    assert not os.path.exists(os.path.dirname(warmup._DIR))
    assert warmup._NO_PID > 1 << 22  # PID_MAX_LIMIT: no real process has a warm-up pid
