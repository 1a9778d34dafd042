"""A Kubernetes SPDY/3.1 streaming client for tests (exec, attach, port-forward).

Speaks what kubectl/crictl speak: `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version`,
one stream per `streamType`. Unlike Go's spdystream it does flow control (announces its
window with SETTINGS and sends WINDOW_UPDATE), so it also checks the server's windows.

    result = exec_url(url, stdin=b"hello", tty=False)
    result.stdout, result.stderr, result.exit_code, result.status

    with SpdyPortForward(url) as pf:            # websocket_tunnel=True: crictl's WebSocket way
        body, err = pf.request(8080, b"GET / HTTP/1.0\\r\\n\\r\\n")
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.spdy_session import SpdySession, SpdyStream
from cri_server.streaming.ws_tunnel import WsTunnelSocket
from tests.support.http_upgrade import Upgraded, upgrade, websocket_upgrade

DEFAULT_PROTOCOLS = (kp.V4, kp.V3, kp.V2, kp.V1)


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    error: bytes                     # raw content of the error stream
    protocol: str
    status: dict[str, Any] | None = field(default=None)   # v4 JSON status

    @property
    def exit_code(self) -> int:
        """0 on success; the NonZeroExitCode cause's code; -1 for other failures."""
        if self.status is not None:
            if self.status.get("status") == "Success":
                return 0
            if self.status.get("reason") == "NonZeroExitCode":
                for cause in self.status.get("details", {}).get("causes", []):
                    if cause.get("reason") == "ExitCode":
                        return int(cause["message"])
            return -1
        if not self.error:
            return 0
        text = self.error.decode("utf-8", "replace")
        tail = text.rsplit("exit code", 1)
        return int(tail[1].strip()) if len(tail) == 2 and tail[1].strip().isdigit() else -1


def spdy_connect(url: str, protocols: Sequence[str] = DEFAULT_PROTOCOLS,
                 flow_control: str = "strict", name: str = "test-spdy",
                 timeout: float = 10.0) -> tuple[SpdySession, str]:
    """Upgrade to SPDY; returns the started client session and the negotiated protocol."""
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
    headers += [(kp.PROTOCOL_HEADER, p) for p in protocols]
    up: Upgraded = upgrade(url, headers, timeout=timeout)
    session = SpdySession(up.sock, client_side=True, initial_data=up.trailing,
                          flow_control=flow_control, name=name)  # type: ignore[arg-type]
    if flow_control == "strict":
        # Announce that we do flow control (what a spec-following client does first).
        with session._cond:
            session._conn.send_settings({7: 64 * 1024})
    session.start()
    return session, up.header(kp.PROTOCOL_HEADER)


def spdy_over_websocket_connect(url: str, timeout: float = 10.0,
                                flow_control: str = "strict") -> tuple[SpdySession, str]:
    """client-go's WebSocket port-forward: SPDY tunnelled in binary WebSocket messages."""
    up = websocket_upgrade(url, [kp.WS_SPDY_TUNNEL_PORTFORWARD], timeout)
    tunnel = WsTunnelSocket(up.sock, up.trailing, client_side=True)
    session = SpdySession(tunnel, client_side=True, flow_control=flow_control,  # type: ignore[arg-type]
                          name="test-spdy-ws")
    if flow_control == "strict":
        with session._cond:
            session._conn.send_settings({7: 64 * 1024})
    session.start()
    return session, up.header("sec-websocket-protocol")


class SpdyExec:
    """An interactive exec/attach session: write stdin, read stdout/stderr, resize."""

    def __init__(self, url: str, stdin: bool = False, stdout: bool = True, stderr: bool = True,
                 tty: bool = False, protocols: Sequence[str] = DEFAULT_PROTOCOLS,
                 flow_control: str = "strict", timeout: float = 10.0) -> None:
        self.session, self.protocol = spdy_connect(url, protocols, flow_control)
        self.timeout = timeout
        proto = self.protocol or kp.V1
        self.error = self._open(kp.STREAM_ERROR)
        self.stdin = self._open(kp.STREAM_STDIN) if stdin else None
        self.stdout = self._open(kp.STREAM_STDOUT) if stdout else None
        self.stderr = self._open(kp.STREAM_STDERR) if stderr and not tty else None
        self.resize_stream = (self._open(kp.STREAM_RESIZE)
                              if tty and kp.supports_resize(proto, websocket=False) else None)

    def _open(self, stream_type: str) -> SpdyStream:
        stream = self.session.open_stream({kp.STREAM_TYPE_HEADER: stream_type})
        stream.wait_reply(self.timeout)
        return stream

    def write(self, data: bytes) -> None:
        assert self.stdin is not None
        self.stdin.write(data)

    def close_stdin(self) -> None:
        if self.stdin is not None:
            self.stdin.close()

    def resize(self, width: int, height: int) -> None:
        assert self.resize_stream is not None
        self.resize_stream.write(json.dumps({"Width": width, "Height": height}).encode() + b"\n")

    def read_stdout(self, size: int = 65536, timeout: float | None = None) -> bytes:
        assert self.stdout is not None
        return self.stdout.read(size, timeout=timeout if timeout is not None else self.timeout)

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """stdout up to and including marker (AssertionError at end of stream)."""
        buf = b""
        while marker not in buf:
            chunk = self.read_stdout(timeout=timeout)
            assert chunk, f"stdout ended before {marker!r}; got {buf!r}"
            buf += chunk
        return buf

    def finish(self) -> ExecResult:
        """Read stdout/stderr to the end and the status; closes the session."""
        outs: dict[str, bytes] = {}

        def drain(key: str, stream: SpdyStream | None) -> None:
            outs[key] = stream.read_all(timeout=self.timeout) if stream else b""

        threads = [threading.Thread(target=drain, args=(k, s), daemon=True)
                   for k, s in (("stdout", self.stdout), ("stderr", self.stderr))]
        for t in threads:
            t.start()
        error = self.error.read_all(timeout=self.timeout)
        for t in threads:
            t.join(self.timeout)
        self.session.close()
        status = None
        if kp.is_v4_or_later(self.protocol) and error:
            status = json.loads(error)
        return ExecResult(outs.get("stdout", b""), outs.get("stderr", b""), error,
                          self.protocol, status)

    def abort(self) -> None:
        """Drop the connection without any goodbye (a killed client)."""
        import socket as _socket
        try:
            self.session.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.session.close()


def exec_url(url: str, stdin: bytes | None = None, tty: bool = False, stdout: bool = True,
             stderr: bool = True, resize: Sequence[tuple[int, int]] = (),
             protocols: Sequence[str] = DEFAULT_PROTOCOLS, flow_control: str = "strict",
             timeout: float = 10.0) -> ExecResult:
    """Run an exec/attach URL to completion: send stdin (then EOF), collect everything."""
    ex = SpdyExec(url, stdin=stdin is not None, stdout=stdout, stderr=stderr, tty=tty,
                  protocols=protocols, flow_control=flow_control, timeout=timeout)
    for width, height in resize:
        ex.resize(width, height)
    if stdin is not None:
        if stdin:
            ex.write(stdin)
        ex.close_stdin()
    return ex.finish()


class SpdyPortForward:
    """A port-forward session: many (data, error) stream pairs over one connection."""

    def __init__(self, url: str, timeout: float = 10.0, flow_control: str = "strict",
                 websocket_tunnel: bool = False) -> None:
        if websocket_tunnel:
            self.session, self.protocol = spdy_over_websocket_connect(url, timeout, flow_control)
        else:
            self.session, self.protocol = spdy_connect(url, (kp.PORT_FORWARD,),
                                                       flow_control=flow_control)
        self.timeout = timeout
        self._next_request = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, port: int) -> tuple[SpdyStream, SpdyStream]:
        """Open the error and data streams of one forwarded connection."""
        with self._lock:
            rid = str(self._next_request)
            self._next_request += 1
        headers = {kp.PORT_HEADER: str(port), kp.REQUEST_ID_HEADER: rid}
        error = self.session.open_stream({kp.STREAM_TYPE_HEADER: kp.STREAM_ERROR, **headers})
        error.wait_reply(self.timeout)
        # Like kubectl: the client never writes on the error stream.
        error.close()
        data = self.session.open_stream({kp.STREAM_TYPE_HEADER: kp.STREAM_DATA, **headers})
        data.wait_reply(self.timeout)
        return data, error

    def request(self, port: int, payload: bytes) -> tuple[bytes, bytes]:
        """Send payload, half-close, read the whole answer and the error stream."""
        data, error = self.open(port)
        if payload:
            data.write(payload)
        data.close()
        body = data.read_all(timeout=self.timeout)
        err = error.read_all(timeout=self.timeout)
        return body, err

    def close(self) -> None:
        self.session.close()
