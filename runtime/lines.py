"""Reading one newline-terminated reply from a stream socket (the JSON-lines clients of the
zygote and of the shims, runtime.zygote_client and runtime.shim_client). Stdlib only."""
from __future__ import annotations

import socket

_RECV = 65536


def recv_line(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """(the first line, without its newline; what came after it), or None when the peer
    closed the connection before a whole line. Timeouts and socket errors propagate."""
    buf = b""
    while b"\n" not in buf:
        chunk = sock.recv(_RECV)
        if not chunk:
            return None
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    return line, rest
