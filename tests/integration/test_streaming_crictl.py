"""Interoperability with a real Go client: crictl (client-go's SPDY and WebSocket code).

A small in-process CRI server answers Exec/Attach/PortForward with URLs of a
StreamingServer whose backend runs host processes (tests/support/host_backend.py), so
this checks only the streaming protocols, against the implementation kubelet, kubectl
and crictl share. Skipped when no `crictl` is on PATH (it is not packaged in Debian;
critest/ documents how to build one locally).
"""
from __future__ import annotations

import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from cri_server.streaming.server import StreamingServer
from proto import api_pb2, api_pb2_grpc
from tests.support.host_backend import HostBackend

CRICTL = shutil.which("crictl")
pytestmark = pytest.mark.skipif(CRICTL is None, reason="no crictl binary on PATH")


class _Runtime(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, streaming: StreamingServer) -> None:
        self.streaming = streaming

    def Version(self, request, context):  # type: ignore[no-untyped-def]
        return api_pb2.VersionResponse(version="0.1.0", runtime_name="pycri-streaming-test",
                                       runtime_version="0", runtime_api_version="v1")

    def Exec(self, request, context):  # type: ignore[no-untyped-def]
        return api_pb2.ExecResponse(url=self.streaming.get_exec_url(request))

    def Attach(self, request, context):  # type: ignore[no-untyped-def]
        return api_pb2.AttachResponse(url=self.streaming.get_attach_url(request))

    def PortForward(self, request, context):  # type: ignore[no-untyped-def]
        return api_pb2.PortForwardResponse(url=self.streaming.get_portforward_url(request))


class _Images(api_pb2_grpc.ImageServiceServicer):
    def ListImages(self, request, context):  # type: ignore[no-untyped-def]
        return api_pb2.ListImagesResponse()

    def ImageFsInfo(self, request, context):  # type: ignore[no-untyped-def]
        return api_pb2.ImageFsInfoResponse()


class Crictl:
    def __init__(self, base: Path, backend: HostBackend) -> None:
        self.streaming = StreamingServer("127.0.0.1:0", backend)
        self.streaming.start()
        sock = base / "cri.sock"
        self.grpc = grpc.server(futures.ThreadPoolExecutor(4))
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(_Runtime(self.streaming), self.grpc)
        api_pb2_grpc.add_ImageServiceServicer_to_server(_Images(), self.grpc)
        self.grpc.add_insecure_port(f"unix://{sock}")
        self.grpc.start()
        self.config = base / "crictl.yaml"
        self.config.write_text(f"runtime-endpoint: unix://{sock}\n"
                               f"image-endpoint: unix://{sock}\ntimeout: 10\n")

    def argv(self, *args: str) -> list[str]:
        return [str(CRICTL), "--config", str(self.config), *args]

    def run(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(*args), input=stdin, capture_output=True, timeout=30,
                              check=False)

    def close(self) -> None:
        self.grpc.stop(0)
        self.streaming.stop()


@pytest.fixture
def backend() -> HostBackend:
    return HostBackend()


@pytest.fixture
def crictl(tmp_path: Path, backend: HostBackend) -> Iterator[Crictl]:
    c = Crictl(tmp_path, backend)
    yield c
    c.close()
    for s in backend.sessions:
        assert s.proc.poll() is not None and s.closed


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_output_stderr_and_exit_code(crictl: Crictl, transport: str) -> None:
    r = crictl.run("exec", "--transport", transport, "c1", "sh", "-c",
                   "echo out; echo err >&2; exit 3")
    assert r.stdout == b"out\n"
    assert b"err\n" in r.stderr
    assert b"command terminated with exit code 3" in r.stderr
    assert r.returncode != 0


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_piped_stdin_and_large_output(crictl: Crictl, transport: str) -> None:
    data = bytes(range(256)) * 8192  # 2 MiB both ways: past every flow-control window
    r = crictl.run("exec", "--transport", transport, "-i", "c1", "cat", stdin=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a tty")
@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_exec_tty_gets_the_terminal_size(crictl: Crictl, transport: str) -> None:
    cmd = " ".join(crictl.argv("exec", "--transport", transport, "-it", "c1", "stty", "size"))
    r = subprocess.run(["script", "-q", "-c", f"stty cols 91 rows 33; {cmd}", "/dev/null"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    assert b"33 91" in r.stdout, r.stdout + r.stderr


def test_attach(crictl: Crictl, backend: HostBackend) -> None:
    backend.attach_commands["c1"] = ["sh", "-c", "echo attached; head -n 1"]
    r = crictl.run("attach", "-i", "c1", stdin=b"typed line\n")
    assert r.stdout == b"attached\ntyped line\n", r.stderr


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"forwarded body"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_port_forward(crictl: Crictl, transport: str) -> None:
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    local = _free_port()
    proc = subprocess.Popen(crictl.argv("port-forward", "--transport", transport, "p1",
                                        f"{local}:{web.server_address[1]}"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        bodies: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(bodies) < 3:
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                bodies.append(data)
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "crictl port-forward did not listen"
                time.sleep(0.1)
        assert all(b.endswith(b"forwarded body") for b in bodies), bodies
    finally:
        proc.kill()
        proc.communicate()
        web.shutdown()
        web.server_close()
