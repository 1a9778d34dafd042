"""stdio.peek: the head of a pipe read without consuming it (tee(2)), so the shim consumes
only what is in the CRI log already (runtime.shim.stdio.relay_output)."""
from __future__ import annotations

import os

import pytest

from runtime.shim import stdio


def test_peek_leaves_the_data_in_the_pipe_and_says_eof() -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(w, b"one\ntwo")
        assert stdio.peek(r) == b"one\ntwo"
        assert stdio.peek(r, 4) == b"one\n"
        assert os.read(r, 100) == b"one\ntwo"
        with pytest.raises(BlockingIOError):
            stdio.peek(r)
        os.close(w)
        w = -1
        assert stdio.peek(r) == b""
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_peek_takes_at_most_a_chunk() -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(w, b"x" * 60000)
        assert len(stdio.peek(r, 1000)) == 1000
        assert len(stdio.peek(r)) == 60000
    finally:
        os.close(r)
        os.close(w)
