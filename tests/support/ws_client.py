"""A Kubernetes WebSocket streaming client for tests (exec, attach, port-forward).

    result = ws_exec(url, stdin=b"hi", protocol="v5.channel.k8s.io")
    result.stdout, result.stderr, result.exit_code

    with WsPortForward(url, [8080, 9090]) as pf:
        body, err = pf.request(0, b"GET / HTTP/1.0\\r\\n\\r\\n")   # 0 = first port
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Self

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.websocket import WsChannelConnection
from tests.support.http_upgrade import websocket_upgrade
from tests.support.spdy_client import ExecResult

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4


def ws_connect(url: str, protocols: Sequence[str], timeout: float = 10.0,
               method: str = "GET") -> WsChannelConnection:
    up = websocket_upgrade(url, protocols, timeout, method)
    return WsChannelConnection(up.sock, up.header("sec-websocket-protocol"), client_side=True,
                               trailing_data=up.trailing, name="test-ws").start()


class WsExec:
    def __init__(self, url: str, stdin: bool = False, tty: bool = False,
                 protocol: str = kp.V5, timeout: float = 10.0) -> None:
        self.conn = ws_connect(url, [protocol] if protocol else [], timeout)
        self.protocol = self.conn.protocol
        self.timeout = timeout
        self.stdin = stdin
        self.tty = tty

    def write(self, data: bytes) -> None:
        self.conn.send(STDIN, data)

    def close_stdin(self) -> None:
        self.conn.send_close_signal(STDIN)

    def resize(self, width: int, height: int) -> None:
        self.conn.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    def read_stdout(self, timeout: float | None = None) -> bytes:
        return self.conn.read(STDOUT, timeout=timeout if timeout is not None else self.timeout)

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        buf = b""
        while marker not in buf:
            chunk = self.read_stdout(timeout)
            assert chunk, f"stdout ended before {marker!r}; got {buf!r}"
            buf += chunk
        return buf

    def finish(self) -> ExecResult:
        """Read every channel until the server closes the connection."""
        outs: dict[int, bytes] = {}

        def drain(ch: int) -> None:
            buf = b""
            while chunk := self.conn.read(ch, timeout=self.timeout):
                buf += chunk
            outs[ch] = buf

        threads = [threading.Thread(target=drain, args=(ch,), daemon=True)
                   for ch in (STDOUT, STDERR, ERROR)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(self.timeout + 1)
        self.conn.close()
        error = outs.get(ERROR, b"")
        status = json.loads(error) if kp.is_v4_or_later(self.protocol) and error else None
        return ExecResult(outs.get(STDOUT, b""), outs.get(STDERR, b""), error, self.protocol,
                          status)

    def abort(self) -> None:
        self.conn.close()


def ws_exec(url: str, stdin: bytes | None = None, tty: bool = False,
            resize: Sequence[tuple[int, int]] = (), protocol: str = kp.V5,
            timeout: float = 10.0) -> ExecResult:
    """Run an exec/attach URL over WebSocket to completion.

    stdin is closed with the v5 close signal; older protocols cannot signal end of input,
    so with them the command must end by itself.
    """
    ex = WsExec(url, stdin=stdin is not None, tty=tty, protocol=protocol, timeout=timeout)
    for width, height in resize:
        ex.resize(width, height)
    if stdin:
        ex.write(stdin)
    if stdin is not None:
        ex.close_stdin()
    return ex.finish()


class WsPortForward:
    """Port-forward over WebSocket: data channel 2i, error channel 2i+1 per port."""

    def __init__(self, url: str, ports: Sequence[int], protocol: str = kp.V4,
                 timeout: float = 10.0) -> None:
        query = "&".join(f"port={p}" for p in ports)
        sep = "&" if "?" in url else "?"
        self.conn = ws_connect(f"{url}{sep}{query}", [protocol] if protocol else [], timeout)
        self.ports = list(ports)
        self.timeout = timeout
        for i, port in enumerate(self.ports):
            for ch in (2 * i, 2 * i + 1):
                prefix = self._read_exact(ch, 2)
                assert int.from_bytes(prefix, "little") == port, (ch, prefix)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def _read_exact(self, channel: int, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.conn.read(channel, n - len(buf), timeout=self.timeout)
            assert chunk, f"channel {channel} ended"
            buf += chunk
        return buf

    def send(self, index: int, data: bytes) -> None:
        self.conn.send(2 * index, data)

    def read_data(self, index: int, timeout: float | None = None) -> bytes:
        return self.conn.read(2 * index, timeout=timeout or self.timeout)

    def read_error(self, index: int, timeout: float | None = None) -> bytes:
        return self.conn.read(2 * index + 1, timeout=timeout or self.timeout)

    def read_data_until(self, index: int, marker: bytes) -> bytes:
        buf = b""
        while marker not in buf:
            chunk = self.read_data(index)
            assert chunk, f"data ended before {marker!r}: {buf!r}"
            buf += chunk
        return buf
