"""The shim's control connection and the daemon's client on a real unix socket: long requests
(fds with them) arrive whole, over-long lines are refused with a reason."""
from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri_common.errors import InvalidArgument
from runtime.shim import control
from runtime.shim.control import Connection
from runtime.shim.loop import Loop
from runtime.shim_client import ShimClient


class EchoShim:
    """A loop thread serving <dir>/shim.sock: replies with the request's size and its fds' inodes."""

    def __init__(self, shim_dir: Path) -> None:
        self.loop = Loop()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(shim_dir / "shim.sock"))
        self.listener.listen()
        self.listener.setblocking(False)
        self.loop.add_reader(self.listener.fileno(), self._accept)
        self._wake_r, self._wake_w = os.pipe()
        self.loop.add_reader(self._wake_r, self.loop.stop)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        sock, _ = self.listener.accept()
        sock.setblocking(False)
        Connection(self.loop, sock, self._handle, lambda c: None)

    @staticmethod
    def _handle(conn: Connection, req: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        inodes = [os.fstat(fd).st_ino for fd in fds]
        for fd in fds:
            os.close(fd)
        return {"size": len(req.get("data", "")), "inodes": inodes}

    def stop(self) -> None:
        os.write(self._wake_w, b"x")
        self.thread.join()
        self.listener.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


@pytest.fixture
def shim(tmp_path: Path) -> Iterator[EchoShim]:
    s = EchoShim(tmp_path)
    yield s
    s.stop()


@pytest.mark.parametrize("size", [10, 300_000, 3_000_000])
def test_request_with_fds_arrives_whole(shim: EchoShim, tmp_path: Path, size: int) -> None:
    r, w = os.pipe()
    try:
        reply = ShimClient(str(tmp_path), timeout=10).call("echo", fds=[r, w], data="y" * size)
        assert reply == {"size": size, "inodes": [os.fstat(r).st_ino, os.fstat(w).st_ino]}
    finally:
        os.close(r)
        os.close(w)


def test_client_refuses_a_request_over_the_shims_limit(shim: EchoShim, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "MAX_LINE", 1000)
    with pytest.raises(InvalidArgument, match="more than the 1000 the shim accepts"):
        ShimClient(str(tmp_path)).call("echo", data="y" * 1000)


@pytest.mark.parametrize("newline", [True, False])
def test_shim_refuses_an_over_long_line(shim: EchoShim, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, newline: bool) -> None:
    monkeypatch.setattr(control, "MAX_LINE", 1000)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(tmp_path / "shim.sock"))
        sock.sendall(json.dumps({"op": "echo", "data": "y" * 2000}).encode()
                     + (b"\n" if newline else b""))
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert json.loads(got) == {"ok": False, "kind": "InvalidArgument",
                               "error": "request line longer than 1000 bytes"}


def test_shim_accepts_what_the_daemon_may_send() -> None:
    from runtime import arglimits
    assert control.MAX_LINE >= 6 * arglimits.ARG_MAX_CAP  # argv+env at the cap, all \u00XX
