"""The streaming HTTP server behind the Exec, Attach and PortForward RPCs.

`StreamingServer(address, backend, token_ttl)`: `start()` listens on `address`
("host:port"; port 0 = a free port, see `.address` / `.base_url` after start) with one
accept thread and one thread per connection (no fork: it runs inside the gRPC daemon).
`get_exec_url(req)`, `get_attach_url(req)`, `get_portforward_url(req)` validate the CRI
request (pycri_common.errors.InvalidArgument as kubelet/containerd do) and return
`<base_url>/exec|attach|portforward/<token>`; the token is single-use and expires
after `token_ttl` seconds (default 60, see tokens.py). `stop()` closes the listener,
ends every live session (exec processes are killed) and joins all threads.

A request is GET or POST on `/<kind>/<token>` carrying either
- `Upgrade: SPDY/3.1` + `X-Stream-Protocol-Version` (exec/attach: v4, v3, v2,
  channel.k8s.io; port-forward: portforward.k8s.io); the 101 reply names the chosen
  one; no common protocol -> 403 with `X-Accepted-Stream-Protocol-Versions`; or
- `Upgrade: websocket` + `Sec-WebSocket-Protocol` (exec/attach: v5, v4, v4.base64,
  channel.k8s.io, base64.channel.k8s.io; port-forward: v4.channel.k8s.io,
  v4.base64.channel.k8s.io, or SPDY/3.1+portforward.k8s.io: SPDY tunnelled in the
  WebSocket, see ws_tunnel.py). Channel port-forward reads ports from `?port=` (else
  the request).
Unknown, used or expired token (or a token of another kind) -> 404; other methods ->
405; no upgrade -> 400.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Sequence

import h11
from wsproto.utilities import generate_accept_token

from cri_server.streaming import exec_attach, portforward
from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.backend import StreamingBackend
from cri_server.streaming.tokens import DEFAULT_TOKEN_TTL, PendingRequest, TokenStore
from cri_server.streaming.ws_tunnel import WsTunnelSocket
from proto import api_pb2
from pycri_common.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

DEFAULT_STREAM_CREATION_TIMEOUT = 30.0  # kubelet's default
_REQUEST_READ_TIMEOUT = 10.0
_KINDS = ("exec", "attach", "portforward")


def parse_address(address: str) -> tuple[str, int]:
    """'host:port', '[v6]:port' or ':port' -> (host, port); InvalidArgument if malformed."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not port_s.isdigit() or int(port_s) > 65535:
        raise InvalidArgument(f"streaming address {address!r} must look like host:port "
                              f"(port 0 = any free port)")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_s)


def validate_exec_request(req: api_pb2.ExecRequest) -> None:
    if not req.container_id:
        raise InvalidArgument("missing required container_id")
    if not list(req.cmd):
        raise InvalidArgument("cmd must not be empty")
    _validate_stdio(req.tty, req.stdin, req.stdout, req.stderr)


def validate_attach_request(req: api_pb2.AttachRequest) -> None:
    if not req.container_id:
        raise InvalidArgument("missing required container_id")
    _validate_stdio(req.tty, req.stdin, req.stdout, req.stderr)


def _validate_stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true: a terminal has one "
                              "output stream")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


def validate_portforward_request(req: api_pb2.PortForwardRequest) -> None:
    if not req.pod_sandbox_id:
        raise InvalidArgument("missing required pod_sandbox_id")
    for port in req.port:
        if not 1 <= port <= 65535:
            raise InvalidArgument(f"port {port} is out of range 1-65535")


def _tune(sock: socket.socket) -> None:
    """No Nagle delay for interactive sessions; keepalive finds peers that vanished
    without a FIN/RST (about 2 minutes), so their sessions are killed and cleaned up."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)


class _HttpRequest:
    def __init__(self, req: h11.Request) -> None:
        self.method = req.method.decode("ascii", "replace").upper()
        target = req.target.decode("ascii", "replace")
        split = urllib.parse.urlsplit(target)
        self.path = split.path
        self.query = urllib.parse.parse_qs(split.query)
        self.headers: list[tuple[str, str]] = [
            (n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in req.headers]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def first(self, name: str) -> str:
        vals = self.values(name)
        return vals[0] if vals else ""


class StreamingServer:
    def __init__(self, address: str, backend: StreamingBackend,
                 token_ttl: float = DEFAULT_TOKEN_TTL,
                 stream_creation_timeout: float = DEFAULT_STREAM_CREATION_TIMEOUT,
                 base_url: str | None = None) -> None:
        self._host, self._port = parse_address(address)
        self.backend = backend
        self.tokens = TokenStore(token_ttl)
        self.stream_creation_timeout = stream_creation_timeout
        self._base_url = base_url
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._stopping = False
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._listener is not None:
            return
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        try:
            listener = socket.create_server((self._host, self._port), family=family,
                                            backlog=128)
        except OSError as exc:
            raise InvalidArgument(f"cannot listen on streaming address "
                                  f"{self._host}:{self._port}: {exc}") from exc
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._stopping = False
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="pycri-stream-accept", daemon=True)
        self._accept_thread.start()
        log.info("streaming server listening on %s", self.base_url)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
            self._accept_thread = None
        with self._lock:
            conns = dict(self._connections)
        for sock in conns.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in conns:
            thread.join(timeout)

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def base_url(self) -> str:
        if self._base_url:
            return self._base_url.rstrip("/")
        host = self._host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._port}"

    def active_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    # ---------------------------------------------------------------- URLs

    def _url(self, kind: str, req: object) -> str:
        if self._listener is None:
            raise Unavailable("the streaming server is not running")
        copy = type(req)()  # type: ignore[call-arg]
        copy.CopyFrom(req)  # type: ignore[attr-defined]
        return f"{self.base_url}/{kind}/{self.tokens.add(kind, copy)}"

    def get_exec_url(self, req: api_pb2.ExecRequest) -> str:
        validate_exec_request(req)
        return self._url("exec", req)

    def get_attach_url(self, req: api_pb2.AttachRequest) -> str:
        validate_attach_request(req)
        return self._url("attach", req)

    def get_portforward_url(self, req: api_pb2.PortForwardRequest) -> str:
        validate_portforward_request(req)
        return self._url("portforward", req)

    # ---------------------------------------------------------------- accepting

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping:
            try:
                sock, _peer = listener.accept()
            except OSError:
                break
            _tune(sock)
            name = f"pycri-stream-{next(self._ids)}"
            thread = threading.Thread(target=self._serve_connection, args=(sock, name),
                                      name=name, daemon=True)
            with self._lock:
                if self._stopping:
                    sock.close()
                    break
                self._connections[thread] = sock
            thread.start()

    def _serve_connection(self, sock: socket.socket, name: str) -> None:
        try:
            self._handle(sock, name)
        except Exception:
            log.exception("%s: streaming connection failed", name)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    # ---------------------------------------------------------------- HTTP

    def _read_request(self, sock: socket.socket, h: h11.Connection) -> _HttpRequest | None:
        # one deadline for the whole request head, not per recv(): a client trickling a
        # byte at a time must not hold a thread for hours
        deadline = time.monotonic() + _REQUEST_READ_TIMEOUT
        request: h11.Request | None = None
        try:
            while True:
                event = h.next_event()
                if event is h11.NEED_DATA:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    sock.settimeout(remaining)
                    h.receive_data(sock.recv(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return None
        except h11.RemoteProtocolError as exc:
            self._respond(sock, h, 400, f"bad request: {exc}")
            return None
        except OSError:
            return None
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(None)
        if request is None:
            return None
        try:
            return _HttpRequest(request)
        except ValueError as exc:  # urlsplit: a target like "//[" has an invalid IPv6 host
            self._respond(sock, h, 400, f"bad request target: {exc}")
            return None

    def _respond(self, sock: socket.socket, h: h11.Connection, status: int, body: str,
                 extra: Sequence[tuple[str, str]] = ()) -> None:
        payload = (body + "\n").encode()
        headers = [("content-type", "text/plain; charset=utf-8"),
                   ("content-length", str(len(payload))), ("connection", "close"),
                   *extra]
        try:
            data = h.send(h11.Response(status_code=status, headers=headers))
            data = (data or b"") + (h.send(h11.Data(data=payload)) or b"")
            data += h.send(h11.EndOfMessage()) or b""
            sock.sendall(data)
        except (h11.LocalProtocolError, OSError):
            pass

    def _switch(self, sock: socket.socket, h: h11.Connection,
                headers: list[tuple[str, str]]) -> bytes | None:
        try:
            sock.sendall(h.send(h11.InformationalResponse(status_code=101, headers=headers))
                         or b"")
        except (h11.LocalProtocolError, OSError):
            return None
        return bytes(h.trailing_data[0])

    def _handle(self, sock: socket.socket, name: str) -> None:
        h = h11.Connection(h11.SERVER)
        req = self._read_request(sock, h)
        if req is None:
            return
        parts = req.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in _KINDS:
            self._respond(sock, h, 404, "not found")
            return
        kind, token = parts
        if req.method not in ("GET", "POST"):
            self._respond(sock, h, 405, f"method {req.method} not allowed",
                          [("allow", "GET, POST")])
            return
        pending = self.tokens.consume(token)
        if pending is None or pending.kind != kind:
            self._respond(sock, h, 404, "unknown, already used or expired streaming token")
            return
        upgrade = req.first("upgrade").lower()
        connection = kp.split_header_values(req.values("connection"))
        if "upgrade" not in (c.lower() for c in connection) or not upgrade:
            self._respond(sock, h, 400, "unable to upgrade: missing upgrade headers in "
                          "request (use SPDY/3.1 or websocket)")
            return
        if upgrade == kp.SPDY_UPGRADE.lower():
            self._serve_spdy(sock, h, req, pending, name)
        elif upgrade == "websocket":
            self._serve_websocket(sock, h, req, pending, name)
        else:
            self._respond(sock, h, 400, f"unable to upgrade: unsupported protocol {upgrade!r}")

    def _serve_spdy(self, sock: socket.socket, h: h11.Connection, req: _HttpRequest,
                    pending: PendingRequest, name: str) -> None:
        server_protocols = (kp.SPDY_PORTFORWARD_PROTOCOLS if pending.kind == "portforward"
                            else kp.SPDY_REMOTECOMMAND_PROTOCOLS)
        client = kp.split_header_values(req.values(kp.PROTOCOL_HEADER.lower()))
        protocol = kp.negotiate(client, server_protocols)
        if protocol is None:
            self._respond(
                sock, h, 403,
                f"unable to upgrade: unable to negotiate protocol: client supports {client}, "
                f"server supports {list(server_protocols)}",
                [(kp.ACCEPTED_PROTOCOLS_HEADER, p) for p in server_protocols])
            return
        headers = [("Connection", "Upgrade"), ("Upgrade", kp.SPDY_UPGRADE)]
        if protocol:
            headers.append((kp.PROTOCOL_HEADER, protocol))
        trailing = self._switch(sock, h, headers)
        if trailing is None:
            return
        if pending.kind == "portforward":
            portforward.serve_spdy(sock, trailing, pending.request.pod_sandbox_id,  # type: ignore[attr-defined]
                                   self.backend, self.stream_creation_timeout, name)
        else:
            exec_attach.serve_spdy(sock, trailing, protocol, pending, self.backend,
                                   self.stream_creation_timeout, name)

    def _serve_websocket(self, sock: socket.socket, h: h11.Connection, req: _HttpRequest,
                         pending: PendingRequest, name: str) -> None:
        key = req.first("sec-websocket-key")
        if not key or req.first("sec-websocket-version") != "13":
            self._respond(sock, h, 400, "bad WebSocket handshake: need Sec-WebSocket-Key and "
                          "Sec-WebSocket-Version: 13", [("sec-websocket-version", "13")])
            return
        server_protocols = (kp.WS_PORTFORWARD_PROTOCOLS if pending.kind == "portforward"
                            else kp.WS_REMOTECOMMAND_PROTOCOLS)
        client = kp.split_header_values(req.values("sec-websocket-protocol"))
        protocol = kp.negotiate(client, server_protocols)
        if protocol is None:
            self._respond(sock, h, 403, f"requested protocol(s) are not supported: {client}; "
                          f"supports {list(server_protocols)}")
            return
        ports: list[int] = []
        tunnel = protocol == kp.WS_SPDY_TUNNEL_PORTFORWARD
        if pending.kind == "portforward" and not tunnel:
            for value in req.query.get("port", []):
                for p in value.split(","):
                    port = portforward.parse_port(p.strip())
                    if port is None:
                        self._respond(sock, h, 400, f"unable to parse {p!r} as a port")
                        return
                    ports.append(port)
            if not ports:
                ports = list(pending.request.port)  # type: ignore[attr-defined]
            if not ports:
                self._respond(sock, h, 400, 'query parameter "port" is required')
                return
            if len(ports) > portforward.MAX_CONNECTIONS:
                self._respond(sock, h, 400, f"{len(ports)} ports requested; at most "
                              f"{portforward.MAX_CONNECTIONS} per connection")
                return
        headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Accept", generate_accept_token(key.encode()).decode())]
        if protocol:
            headers.append(("Sec-WebSocket-Protocol", protocol))
        trailing = self._switch(sock, h, headers)
        if trailing is None:
            return
        if tunnel:
            portforward.serve_spdy(WsTunnelSocket(sock, trailing), b"",
                                   pending.request.pod_sandbox_id,  # type: ignore[attr-defined]
                                   self.backend, self.stream_creation_timeout, name)
        elif pending.kind == "portforward":
            portforward.serve_websocket(sock, trailing, protocol,
                                        pending.request.pod_sandbox_id,  # type: ignore[attr-defined]
                                        ports, self.backend, name)
        else:
            exec_attach.serve_websocket(sock, trailing, protocol, pending, self.backend, name)
