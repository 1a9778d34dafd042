"""The shim's event loop and non-blocking writer (real pipes, no timing assertions)."""
from __future__ import annotations

import os

from runtime.shim.loop import BufferedWriter, Loop


def test_writer_queues_drops_over_limit_and_forces() -> None:
    loop = Loop()
    r, w = os.pipe()
    writer = BufferedWriter(loop, w, limit=100_000)
    pipe_size = 0
    while writer.queued == 0:  # fill the pipe itself first
        assert writer.write(b"x" * 4096)
        pipe_size += 4096
    assert writer.write(b"y" * 50_000)
    assert not writer.write(b"z" * 60_000)  # over the limit: dropped whole
    assert writer.dropped == 60_000
    assert writer.write(b"!" * 60_000, force=True)
    drained: list[bool] = []
    writer.on_drain = lambda: drained.append(True)
    got = b""
    while not drained:
        got += os.read(r, 1 << 20)
        loop.run_once()
    got += os.read(r, 1 << 20)
    assert b"z" not in got and got.endswith(b"!" * 60_000) and b"y" * 50_000 in got
    writer.close()
    os.close(r)


def test_writer_reports_broken_pipe_once_and_closes() -> None:
    loop = Loop()
    r, w = os.pipe()
    os.close(r)
    errors: list[OSError] = []
    writer = BufferedWriter(loop, w, on_error=errors.append)
    assert not writer.write(b"data")
    assert writer.closed and len(errors) == 1
    assert not writer.write(b"more")


def test_close_when_flushed_waits_for_the_queue() -> None:
    loop = Loop()
    r, w = os.pipe()
    closed: list[bool] = []
    writer = BufferedWriter(loop, w, on_closed=lambda: closed.append(True))
    while writer.queued == 0:
        writer.write(b"x" * 65536)
    writer.close_when_flushed()
    assert not closed
    while not closed:
        os.read(r, 1 << 20)
        loop.run_once()
    assert writer.closed
    os.close(r)


def test_timers_run_in_deadline_order_and_cancel() -> None:
    loop = Loop()
    seen: list[str] = []
    loop.call_later(0.002, lambda: seen.append("late"))
    loop.call_later(0, lambda: seen.append("now"))
    loop.call_later(0.001, lambda: seen.append("cancelled")).cancel()
    loop.call_later(0.003, loop.stop)
    loop.run()
    assert seen == ["now", "late"]
