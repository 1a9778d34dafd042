"""Kubernetes streaming protocol names, negotiation and status messages.

SPDY (header `X-Stream-Protocol-Version`): exec/attach speak `v4.channel.k8s.io`,
`v3.channel.k8s.io`, `v2.channel.k8s.io`, `channel.k8s.io` (also assumed when the
client names none); port-forward speaks `portforward.k8s.io`.
WebSocket (`Sec-WebSocket-Protocol`): exec/attach speak `v5.channel.k8s.io`,
`v4.channel.k8s.io`, `v4.base64.channel.k8s.io`, `channel.k8s.io`,
`base64.channel.k8s.io` (binary `channel.k8s.io` semantics when none is named);
port-forward speaks `v4.channel.k8s.io`, `v4.base64.channel.k8s.io` (channel pairs) and
`SPDY/3.1+portforward.k8s.io` (a SPDY session tunnelled in binary messages).

Exit status on the error stream: v4+ a JSON metav1.Status (Success, or Failure with
reason NonZeroExitCode and a cause {"reason": "ExitCode", "message": "<n>"}); older
protocols write nothing on success and a plain message on failure.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"

V1 = "channel.k8s.io"
V2 = "v2.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
BASE64 = "base64.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
PORT_FORWARD = "portforward.k8s.io"

SPDY_REMOTECOMMAND_PROTOCOLS = (V4, V3, V2, V1)
SPDY_PORTFORWARD_PROTOCOLS = (PORT_FORWARD,)
WS_REMOTECOMMAND_PROTOCOLS = (V5, V4, V4_BASE64, V1, BASE64)
# client-go's WebSocket port-forward tunnels SPDY through the WebSocket (KEP-4006).
WS_SPDY_TUNNEL_PORTFORWARD = "SPDY/3.1+" + PORT_FORWARD
WS_PORTFORWARD_PROTOCOLS = (WS_SPDY_TUNNEL_PORTFORWARD, V4, V4_BASE64)

# Stream types (SPDY `streamType` header) and WebSocket channel numbers.
STREAM_ERROR = "error"
STREAM_STDIN = "stdin"
STREAM_STDOUT = "stdout"
STREAM_STDERR = "stderr"
STREAM_RESIZE = "resize"
STREAM_DATA = "data"
WS_CHANNELS = {STREAM_STDIN: 0, STREAM_STDOUT: 1, STREAM_STDERR: 2, STREAM_ERROR: 3,
               STREAM_RESIZE: 4}
WS_CLOSE_CHANNEL = 255  # v5: [255, n] = the sender closed channel n

STREAM_TYPE_HEADER = "streamType"
PORT_HEADER = "port"
REQUEST_ID_HEADER = "requestID"


def split_header_values(values: Iterable[str]) -> list[str]:
    """Header values, each possibly a comma-separated list, flattened and stripped."""
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def negotiate(client: Sequence[str], server: Sequence[str]) -> str | None:
    """First protocol of the client's (ordered) list the server supports; "" if the
    client named none; None when nothing matches."""
    if not client:
        return ""
    for proto in client:
        if proto in server:
            return proto
    return None


def is_v4_or_later(protocol: str) -> bool:
    return protocol in (V4, V5, V4_BASE64)


def supports_resize(protocol: str, websocket: bool) -> bool:
    return websocket or protocol in (V3, V4)


def expected_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool,
                     resize: bool) -> set[str]:
    """The streams a client opens for an exec/attach with these flags."""
    wanted = {STREAM_ERROR}
    if stdin:
        wanted.add(STREAM_STDIN)
    if stdout:
        wanted.add(STREAM_STDOUT)
    if stderr and not tty:
        wanted.add(STREAM_STDERR)
    if tty and resize:
        wanted.add(STREAM_RESIZE)
    return wanted


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _go_list(cmd: Sequence[str]) -> str:
    """A command as Go's fmt prints a []string (kubelet's message format)."""
    return "[" + " ".join(cmd) + "]"


def success_status() -> bytes:
    return _json({"metadata": {}, "status": "Success"})


def exit_code_status(code: int, cmd: Sequence[str]) -> bytes:
    message = (f"command terminated with non-zero exit code: error executing command "
               f"{_go_list(cmd)}, exit code {code}")
    return _json({
        "metadata": {}, "status": "Failure", "message": message,
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    })


def internal_error_status(message: str) -> bytes:
    return _json({
        "metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]}, "code": 500,
    })


def status_message(protocol: str, exit_code: int | None, cmd: Sequence[str],
                   error: str | None = None) -> bytes:
    """What to write on the error stream at the end (b"" = nothing)."""
    if is_v4_or_later(protocol):
        if error is not None:
            return internal_error_status(error)
        if exit_code:
            return exit_code_status(exit_code, cmd)
        return success_status()
    if error is not None:
        return error.encode()
    if exit_code:
        return (f"command terminated with non-zero exit code: error executing command "
                f"{_go_list(cmd)}, exit code {exit_code}").encode()
    return b""


def portforward_error(message: str, close_connection: bool = True) -> bytes:
    """The JSON kubelet writes on a port-forward error stream."""
    body: dict[str, object] = {"message": message}
    if close_connection:
        body["closeConnection"] = True
    return _json(body)
