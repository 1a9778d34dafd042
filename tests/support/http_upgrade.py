"""A minimal HTTP/1.1 upgrade request for the streaming test clients."""
from __future__ import annotations

import base64
import os
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass


class UpgradeRefused(Exception):
    """The server answered the upgrade request with a non-101 status."""

    def __init__(self, status: int, body: str, headers: list[tuple[str, str]]) -> None:
        super().__init__(f"HTTP {status}: {body.strip()}")
        self.status = status
        self.body = body
        self.headers = headers


@dataclass
class Upgraded:
    sock: socket.socket
    status: int
    headers: list[tuple[str, str]]   # names lower case
    trailing: bytes                  # bytes received after the response head

    def header(self, name: str) -> str:
        for n, v in self.headers:
            if n == name.lower():
                return v
        return ""


def upgrade(url: str, headers: Sequence[tuple[str, str]], method: str = "POST",
            timeout: float = 10.0) -> Upgraded:
    """Send `method url` with the given headers; return the socket after a 101."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}",
                 *(f"{n}: {v}" for n, v in headers)]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"server closed the connection; got {buf!r}")
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        resp_headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            resp_headers.append((name.strip().lower(), value.strip()))
        if status != 101:
            length = next((int(v) for n, v in resp_headers if n == "content-length"), None)
            body = rest
            while length is not None and len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            sock.close()
            raise UpgradeRefused(status, body.decode("utf-8", "replace"), resp_headers)
        sock.settimeout(None)
        return Upgraded(sock, status, resp_headers, rest)
    except BaseException:
        sock.close()
        raise


def websocket_upgrade(url: str, protocols: Sequence[str], timeout: float = 10.0,
                      method: str = "GET") -> Upgraded:
    """WebSocket opening handshake (RFC 6455); checks Sec-WebSocket-Accept."""
    from wsproto.utilities import generate_accept_token

    key = base64.b64encode(os.urandom(16)).decode()
    headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
               ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", key)]
    if protocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
    up = upgrade(url, headers, method=method, timeout=timeout)
    if up.header("sec-websocket-accept") != generate_accept_token(key.encode()).decode():
        up.sock.close()
        raise ConnectionError("bad Sec-WebSocket-Accept")
    return up
