"""The streaming server end to end over loopback, with host processes as the backend.

Clients: tests/support/spdy_client.py and ws_client.py (also used through the daemon).
"""
from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.server import StreamingServer
from proto import api_pb2
from pycri_common.errors import InvalidArgument
from tests.support.host_backend import HostBackend
from tests.support.http_upgrade import UpgradeRefused, upgrade
from tests.support.spdy_client import SpdyExec, SpdyPortForward, exec_url
from tests.support.ws_client import WsExec, WsPortForward, ws_exec

SH = "/bin/sh"


def stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith("pycri-") and t.name != "pycri-stream-accept"]


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def backend() -> HostBackend:
    return HostBackend()


@pytest.fixture
def server(backend: HostBackend) -> Iterator[StreamingServer]:
    srv = StreamingServer("127.0.0.1:0", backend, stream_creation_timeout=5)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        wait_for(lambda: not stream_threads(), f"streaming threads to end: {stream_threads()}")
        for s in backend.sessions:
            assert s.proc.poll() is not None, f"process {s.cmd} left running"
            assert s.closed, f"session {s.cmd} never closed"


def exec_req(script: str, stdin: bool = False, stdout: bool = True, stderr: bool = True,
             tty: bool = False) -> api_pb2.ExecRequest:
    return api_pb2.ExecRequest(container_id="c1", cmd=[SH, "-c", script], stdin=stdin,
                               stdout=stdout, stderr=stderr, tty=tty)


# ---------------------------------------------------------------- URL API


def test_urls_carry_single_use_tokens(server: StreamingServer) -> None:
    u1 = server.get_exec_url(exec_req("true"))
    u2 = server.get_exec_url(exec_req("true"))
    assert u1.startswith(server.base_url + "/exec/") and u1 != u2
    assert server.get_attach_url(api_pb2.AttachRequest(container_id="c", stdout=True)) \
        .startswith(server.base_url + "/attach/")
    assert server.get_portforward_url(api_pb2.PortForwardRequest(pod_sandbox_id="p")) \
        .startswith(server.base_url + "/portforward/")


@pytest.mark.parametrize("req, message", [
    (api_pb2.ExecRequest(cmd=["true"], stdout=True), "container_id"),
    (api_pb2.ExecRequest(container_id="c", stdout=True), "cmd"),
    (api_pb2.ExecRequest(container_id="c", cmd=["x"]), "one of stdin, stdout, or stderr"),
    (api_pb2.ExecRequest(container_id="c", cmd=["x"], tty=True, stderr=True), "tty and stderr"),
])
def test_exec_validation(server: StreamingServer, req: api_pb2.ExecRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        server.get_exec_url(req)


def test_attach_and_portforward_validation(server: StreamingServer) -> None:
    with pytest.raises(InvalidArgument, match="tty and stderr"):
        server.get_attach_url(api_pb2.AttachRequest(container_id="c", tty=True, stderr=True))
    with pytest.raises(InvalidArgument, match="one of stdin"):
        server.get_attach_url(api_pb2.AttachRequest(container_id="c"))
    with pytest.raises(InvalidArgument, match="pod_sandbox_id"):
        server.get_portforward_url(api_pb2.PortForwardRequest(port=[80]))
    with pytest.raises(InvalidArgument, match="out of range"):
        server.get_portforward_url(api_pb2.PortForwardRequest(pod_sandbox_id="p", port=[0]))


def test_bad_streaming_address_is_invalid_argument(backend: HostBackend) -> None:
    with pytest.raises(InvalidArgument, match="host:port"):
        StreamingServer("127.0.0.1", backend)


# ---------------------------------------------------------------- tokens


def test_token_reuse_is_404(server: StreamingServer) -> None:
    url = server.get_exec_url(exec_req("echo once"))
    assert exec_url(url).stdout == b"once\n"
    with pytest.raises(UpgradeRefused) as err:
        exec_url(url)
    assert err.value.status == 404


def test_unknown_token_and_wrong_kind_are_404(server: StreamingServer) -> None:
    with pytest.raises(UpgradeRefused) as err:
        exec_url(server.base_url + "/exec/nope")
    assert err.value.status == 404
    url = server.get_exec_url(exec_req("true"))
    with pytest.raises(UpgradeRefused) as err:
        exec_url(url.replace("/exec/", "/attach/"))
    assert err.value.status == 404
    with pytest.raises(UpgradeRefused) as err:
        exec_url(server.base_url + "/other/x")
    assert err.value.status == 404


def test_expired_token_is_404(server: StreamingServer) -> None:
    now = [1000.0]
    server.tokens._clock = lambda: now[0]
    url = server.get_exec_url(exec_req("true"))
    now[0] += server.tokens.ttl + 1
    with pytest.raises(UpgradeRefused) as err:
        exec_url(url)
    assert err.value.status == 404
    assert len(server.tokens) == 0


def test_request_without_upgrade_is_400(server: StreamingServer) -> None:
    url = server.get_exec_url(exec_req("true"))
    with pytest.raises(UpgradeRefused) as err:
        upgrade(url, [])
    assert err.value.status == 400


def test_unsupported_protocol_is_403_with_accepted_list(server: StreamingServer) -> None:
    url = server.get_exec_url(exec_req("true"))
    with pytest.raises(UpgradeRefused) as err:
        exec_url(url, protocols=["v9.channel.k8s.io"])
    assert err.value.status == 403
    accepted = [v for n, v in err.value.headers if n == kp.ACCEPTED_PROTOCOLS_HEADER.lower()]
    assert kp.V4 in accepted


# ---------------------------------------------------------------- SPDY exec


def test_exec_stdin_stdout_stderr_and_exit_code(server: StreamingServer,
                                                backend: HostBackend) -> None:
    url = server.get_exec_url(exec_req("cat; echo oops >&2; exit 7", stdin=True))
    result = exec_url(url, stdin=b"line one\nline two\n")
    assert result.protocol == kp.V4
    assert result.stdout == b"line one\nline two\n"
    assert result.stderr == b"oops\n"
    assert result.exit_code == 7
    assert result.status is not None
    assert result.status["reason"] == "NonZeroExitCode"
    assert result.status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert backend.sessions[0].stdin_closed and not backend.sessions[0].killed


def test_exec_success_status(server: StreamingServer) -> None:
    result = exec_url(server.get_exec_url(exec_req("echo hi")))
    assert result.stdout == b"hi\n" and result.stderr == b""
    assert result.status == {"metadata": {}, "status": "Success"}
    assert result.exit_code == 0


def test_exec_stdout_only(server: StreamingServer) -> None:
    url = server.get_exec_url(exec_req("echo out; echo err >&2", stderr=False))
    result = exec_url(url, stderr=False)
    assert result.stdout == b"out\n" and result.stderr == b""


def test_exec_large_output_with_flow_control(server: StreamingServer) -> None:
    url = server.get_exec_url(exec_req("head -c 1048576 /dev/zero | tr '\\0' a"))
    result = exec_url(url)
    assert result.stdout == b"a" * 1048576


def test_exec_large_output_to_a_client_without_flow_control(server: StreamingServer) -> None:
    """Like Go's spdystream: never a WINDOW_UPDATE; the server must not stall at 64 KiB."""
    url = server.get_exec_url(exec_req("head -c 300000 /dev/zero | tr '\\0' b"))
    ex = SpdyExec(url, flow_control="auto")
    ex.session._conn.acknowledge_received_data = lambda *_: None  # type: ignore[method-assign]
    result = ex.finish()
    assert result.stdout == b"b" * 300000 and result.exit_code == 0


def test_exec_large_stdin(server: StreamingServer) -> None:
    data = bytes(range(256)) * 2048  # 512 KiB
    url = server.get_exec_url(exec_req("wc -c", stdin=True, stderr=False))
    result = exec_url(url, stdin=data, stderr=False)
    assert result.stdout.strip() == str(len(data)).encode()


def test_exec_tty_resize_reaches_the_pty(server: StreamingServer, backend: HostBackend) -> None:
    url = server.get_exec_url(exec_req("read x; stty size; echo got $x", stdin=True,
                                       stderr=False, tty=True))
    ex = SpdyExec(url, stdin=True, stderr=False, tty=True)
    assert ex.resize_stream is not None and ex.stderr is None
    ex.resize(120, 40)
    wait_for(lambda: backend.sessions and backend.sessions[0].resizes == [(120, 40)],
             "the resize to reach the backend")
    ex.write(b"ping\n")
    result = ex.finish()
    assert b"40 120" in result.stdout
    assert b"got ping" in result.stdout
    assert result.exit_code == 0


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_tty_starts_with_the_client_size(server: StreamingServer, backend: HostBackend,
                                              transport: str) -> None:
    url = server.get_exec_url(exec_req("stty size", stderr=False, tty=True))
    run = exec_url if transport == "spdy" else ws_exec
    result = run(url, tty=True, resize=[(77, 22)])
    assert result.stdout == b"22 77\r\n"
    assert backend.sessions[0].initial_size == (77, 22)


def test_exec_tty_interactive(server: StreamingServer) -> None:
    url = server.get_exec_url(exec_req("cat", stdin=True, stderr=False, tty=True))
    ex = SpdyExec(url, stdin=True, stderr=False, tty=True)
    ex.write(b"abc\n")
    assert b"abc" in ex.read_until(b"abc\r\nabc\r\n")  # echo + cat's copy
    ex.close_stdin()  # ^D ends cat
    assert ex.finish().exit_code == 0


@pytest.mark.parametrize("protocol", [kp.V3, kp.V2, kp.V1])
def test_exec_pre_v4_protocols_report_plain_text(server: StreamingServer, protocol: str) -> None:
    result = exec_url(server.get_exec_url(exec_req("echo x; exit 4")), protocols=[protocol])
    assert result.protocol == protocol
    assert result.stdout == b"x\n"
    assert result.status is None
    assert b"exit code 4" in result.error and result.exit_code == 4
    ok = exec_url(server.get_exec_url(exec_req("true")), protocols=[protocol])
    assert ok.error == b"" and ok.exit_code == 0


def test_exec_without_protocol_header_is_v1(server: StreamingServer) -> None:
    result = exec_url(server.get_exec_url(exec_req("echo legacy")), protocols=[])
    assert result.protocol == "" and result.stdout == b"legacy\n"


def test_backend_failure_is_an_internal_error_status(server: StreamingServer,
                                                     backend: HostBackend) -> None:
    backend.fail_exec = "container c1 is not running"
    result = exec_url(server.get_exec_url(exec_req("true")))
    assert result.status is not None
    assert result.status["status"] == "Failure"
    assert result.status["reason"] == "InternalError"
    assert "container c1 is not running" in result.status["message"]


def test_twenty_concurrent_exec_sessions(server: StreamingServer) -> None:
    results: dict[int, object] = {}

    def one(i: int) -> None:
        url = server.get_exec_url(exec_req(f"cat; echo err{i} >&2; exit {i % 5}", stdin=True))
        results[i] = exec_url(url, stdin=f"hello {i}\n".encode() * 100)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 20
    for i, r in results.items():
        assert r.stdout == f"hello {i}\n".encode() * 100  # type: ignore[attr-defined]
        assert r.stderr == f"err{i}\n".encode()  # type: ignore[attr-defined]
        assert r.exit_code == i % 5  # type: ignore[attr-defined]


def test_client_killed_mid_exec_kills_the_process(server: StreamingServer,
                                                  backend: HostBackend) -> None:
    url = server.get_exec_url(exec_req("echo started; exec sleep 300", stdin=True))
    ex = SpdyExec(url, stdin=True)
    assert ex.read_until(b"started\n")
    assert stream_threads()
    ex.abort()
    wait_for(lambda: backend.sessions[0].killed, "the backend kill")
    wait_for(lambda: backend.sessions[0].proc.poll() is not None, "the process to die")
    wait_for(lambda: not stream_threads(), f"threads to end: {stream_threads()}")
    assert backend.sessions[0].closed
    assert server.active_connections() == 0


def test_streams_not_opened_in_time_end_the_connection(backend: HostBackend) -> None:
    srv = StreamingServer("127.0.0.1:0", backend, stream_creation_timeout=0.3)
    srv.start()
    try:
        url = srv.get_exec_url(exec_req("true", stdin=True))
        ex = SpdyExec(url, stdin=False)  # never opens the stdin stream the request wants
        assert ex.session.wait_closed(10)
        assert backend.sessions == []
        ex.session.close()
    finally:
        srv.stop()
    wait_for(lambda: not stream_threads(), "threads to end")


def test_stop_ends_live_sessions(backend: HostBackend) -> None:
    srv = StreamingServer("127.0.0.1:0", backend)
    srv.start()
    ex = SpdyExec(srv.get_exec_url(exec_req("echo up; exec sleep 300")))
    ex.read_until(b"up\n")
    srv.stop()
    assert backend.sessions[0].killed and backend.sessions[0].proc.poll() is not None
    wait_for(lambda: not stream_threads(), "threads to end")
    ex.session.close()


# ---------------------------------------------------------------- SPDY attach


def test_attach_echoes_stdin(server: StreamingServer, backend: HostBackend) -> None:
    backend.attach_commands["ctr"] = [SH, "-c", "cat; echo bye >&2"]
    url = server.get_attach_url(api_pb2.AttachRequest(container_id="ctr", stdin=True,
                                                      stdout=True, stderr=True))
    result = exec_url(url, stdin=b"to the container\n")
    assert result.stdout == b"to the container\n" and result.stderr == b"bye\n"
    assert result.status == {"metadata": {}, "status": "Success"}
    assert not backend.sessions[0].killed


def test_attach_client_leaving_detaches_without_kill(server: StreamingServer,
                                                     backend: HostBackend) -> None:
    backend.attach_commands["ctr"] = [SH, "-c", "echo running; exec sleep 300"]
    url = server.get_attach_url(api_pb2.AttachRequest(container_id="ctr", stdout=True))
    ex = SpdyExec(url, stderr=False)
    ex.read_until(b"running\n")
    ex.abort()
    wait_for(lambda: backend.sessions[0].closed, "the detach")
    assert not backend.sessions[0].killed


# ---------------------------------------------------------------- WebSocket exec


@pytest.mark.parametrize("protocol", [kp.V5, kp.V4, kp.V4_BASE64])
def test_ws_exec(server: StreamingServer, protocol: str) -> None:
    url = server.get_exec_url(exec_req("head -n 1; echo e >&2; exit 2", stdin=True))
    result = ws_exec(url, stdin=b"via websocket\n", protocol=protocol)
    assert result.protocol == protocol
    assert result.stdout == b"via websocket\n" and result.stderr == b"e\n"
    assert result.exit_code == 2


def test_ws_v5_close_signal_ends_stdin(server: StreamingServer, backend: HostBackend) -> None:
    url = server.get_exec_url(exec_req("cat", stdin=True, stderr=False))
    result = ws_exec(url, stdin=b"abc", protocol=kp.V5)
    assert result.stdout == b"abc" and result.exit_code == 0
    assert backend.sessions[0].stdin_closed


@pytest.mark.parametrize("protocol", [kp.V1, kp.BASE64])
def test_ws_pre_v4_protocols(server: StreamingServer, protocol: str) -> None:
    result = ws_exec(server.get_exec_url(exec_req("echo old; exit 3")), protocol=protocol)
    assert result.stdout == b"old\n" and result.status is None and result.exit_code == 3


def test_ws_exec_tty_resize(server: StreamingServer, backend: HostBackend) -> None:
    url = server.get_exec_url(exec_req("read x; stty size", stdin=True, stderr=False, tty=True))
    ex = WsExec(url, stdin=True, tty=True)
    ex.resize(100, 30)
    wait_for(lambda: backend.sessions and backend.sessions[0].resizes == [(100, 30)],
             "the resize")
    ex.write(b"go\n")
    result = ex.finish()
    assert b"30 100" in result.stdout and result.exit_code == 0


def test_ws_client_gone_kills_the_process(server: StreamingServer,
                                          backend: HostBackend) -> None:
    url = server.get_exec_url(exec_req("echo started; exec sleep 300"))
    ex = WsExec(url)
    ex.read_until(b"started\n")
    ex.abort()
    wait_for(lambda: backend.sessions[0].killed, "the kill")
    wait_for(lambda: not stream_threads(), "threads to end")


def test_ws_unsupported_protocol_is_403(server: StreamingServer) -> None:
    with pytest.raises(UpgradeRefused) as err:
        ws_exec(server.get_exec_url(exec_req("true")), protocol="v9.channel.k8s.io")
    assert err.value.status == 403


# ---------------------------------------------------------------- port-forward


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        port = self.server.server_address[1]  # type: ignore[index]
        body = f"hello from {port} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_servers() -> Iterator[list[int]]:
    servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    yield [s.server_address[1] for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pf_url(server: StreamingServer, ports: list[int]) -> str:
    return server.get_portforward_url(api_pb2.PortForwardRequest(pod_sandbox_id="pod1",
                                                                 port=ports))


def test_spdy_portforward_http_get_on_several_ports(server: StreamingServer,
                                                    backend: HostBackend,
                                                    http_servers: list[int]) -> None:
    with SpdyPortForward(pf_url(server, http_servers)) as pf:
        assert pf.protocol == kp.PORT_FORWARD
        for port in http_servers + http_servers:
            body, err = pf.request(port, b"GET /x HTTP/1.0\r\nHost: a\r\n\r\n")
            assert body.startswith(b"HTTP/1.0 200")
            assert body.endswith(f"hello from {port} /x".encode())
            assert err == b""
    assert backend.forwards == [("pod1", p) for p in http_servers + http_servers]


def test_spdy_portforward_concurrent_connections(server: StreamingServer,
                                                 http_servers: list[int]) -> None:
    results: list[bytes] = []
    with SpdyPortForward(pf_url(server, http_servers)) as pf:
        def one(i: int) -> None:
            body, _ = pf.request(http_servers[i % 2], f"GET /{i} HTTP/1.0\r\n\r\n".encode())
            results.append(body)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(results) == 10 and all(b" 200 " in r for r in results)


def test_spdy_portforward_error_when_nothing_listens(server: StreamingServer) -> None:
    port = free_port()
    with SpdyPortForward(pf_url(server, [port])) as pf:
        body, err = pf.request(port, b"GET / HTTP/1.0\r\n\r\n")
    assert body == b""
    message = json.loads(err)
    assert f"error forwarding port {port} to pod pod1" in message["message"]
    assert "refused" in message["message"].lower()


def test_spdy_portforward_echo_large_payload(server: StreamingServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def echo() -> None:
            conn, _ = listener.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

        t = threading.Thread(target=echo, daemon=True)
        t.start()
        payload = bytes(range(256)) * 4096  # 1 MiB: crosses many flow-control windows
        with SpdyPortForward(pf_url(server, [port])) as pf:
            data, _error = pf.open(port)
            def write_and_close() -> None:
                data.write(payload)
                data.close()
            writer = threading.Thread(target=write_and_close)
            writer.start()
            echoed = data.read_all(timeout=20)
            writer.join(20)
        t.join(5)
    assert echoed == payload


def test_spdy_portforward_client_gone_closes_backend(server: StreamingServer) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        pf = SpdyPortForward(pf_url(server, [port]))
        data, _ = pf.open(port)
        conn, _ = listener.accept()
        data.write(b"hi")
        assert conn.recv(10) == b"hi"
        pf.session.close()
        conn.settimeout(10)
        assert conn.recv(10) == b""  # the server closed its backend socket
        conn.close()
    wait_for(lambda: not stream_threads(), "threads to end")


def test_spdy_portforward_connections_per_session_are_capped(
        server: StreamingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from cri_server.streaming import portforward
    monkeypatch.setattr(portforward, "MAX_CONNECTIONS", 3)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with SpdyPortForward(pf_url(server, [port])) as pf:
            held = [pf.open(port) for _ in range(3)]
            accepted = [listener.accept()[0] for _ in range(3)]
            with pytest.raises(ConnectionResetError, match="refused"):
                pf.open(port)                  # a fourth connection at once is refused
            held[0][0].close()                 # the client ends one connection...
            accepted[0].close()
            wait_for(lambda: _opens(pf, port), "a slot to free up")   # ...which frees a slot
            for conn in [*accepted[1:], listener.accept()[0]]:
                conn.close()


def _opens(pf: SpdyPortForward, port: int) -> bool:
    try:
        pf.open(port)
    except ConnectionResetError:
        return False
    return True


def test_ws_portforward_too_many_ports_is_400(server: StreamingServer) -> None:
    from cri_server.streaming import portforward
    ports = [1000 + i for i in range(portforward.MAX_CONNECTIONS + 1)]
    with pytest.raises(UpgradeRefused) as err:
        WsPortForward(pf_url(server, []), ports)
    assert err.value.status == 400


def test_ws_portforward_two_ports(server: StreamingServer, http_servers: list[int]) -> None:
    url = pf_url(server, [])
    with WsPortForward(url, http_servers) as pf:
        for i, port in enumerate(http_servers):
            pf.send(i, b"GET /ws HTTP/1.0\r\n\r\n")
            body = pf.read_data_until(i, f"hello from {port} /ws".encode())
            assert body.startswith(b"HTTP/1.0 200")


def test_ws_portforward_ports_from_the_request(server: StreamingServer,
                                               http_servers: list[int]) -> None:
    url = pf_url(server, http_servers[:1])
    with WsPortForward(url, []) as pf:
        prefix = pf._read_exact(0, 2)
        assert int.from_bytes(prefix, "little") == http_servers[0]


def test_ws_portforward_error_channel(server: StreamingServer) -> None:
    port = free_port()
    with WsPortForward(pf_url(server, []), [port]) as pf:
        message = pf.read_error(0)
    assert f"error forwarding port {port}" in message.decode()


def test_spdy_tunnelled_in_websocket_portforward(server: StreamingServer,
                                                 http_servers: list[int]) -> None:
    """crictl/kubectl `port-forward --transport websocket`: SPDY/3.1+portforward.k8s.io."""
    with SpdyPortForward(pf_url(server, []), websocket_tunnel=True) as pf:
        assert pf.protocol == kp.WS_SPDY_TUNNEL_PORTFORWARD
        for port in http_servers:
            body, err = pf.request(port, b"GET /t HTTP/1.0\r\n\r\n")
            assert body.endswith(f"hello from {port} /t".encode()) and err == b""
        port = free_port()
        body, err = pf.request(port, b"x")
        assert body == b"" and f"error forwarding port {port}" in json.loads(err)["message"]


def test_request_head_has_one_deadline_not_one_per_read(server: StreamingServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client trickling its request a byte at a time is cut off after the read timeout."""
    from cri_server.streaming import server as server_mod
    monkeypatch.setattr(server_mod, "_REQUEST_READ_TIMEOUT", 1.0)
    host, port = server.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /exec/x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 200:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > 6:
                break
        if not closed:
            sock.settimeout(5)
            try:
                closed = sock.recv(100) == b""
            except OSError:
                closed = True
        assert closed
        assert time.monotonic() - started < 5


def test_resize_messages_with_infinite_sizes_are_skipped_not_fatal() -> None:
    """json accepts Infinity; int(inf) raises OverflowError, which used to end the resize
    pump (later resizes were lost)."""
    from cri_server.streaming.remotecommand import parse_resize_messages
    buf = bytearray(b'{"Width": Infinity, "Height": 1}{"Width": 80, "Height": 24}')
    assert parse_resize_messages(buf) == [(80, 24)]
    assert buf == b""
