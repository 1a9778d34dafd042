"""Exec, attach and port-forward through the real daemon's streaming server.

The clients are tests/support/spdy_client.py (what kubectl/crictl speak by default) and
tests/support/ws_client.py (`--transport websocket`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from cri_server.streaming import k8s_protocols as kp
from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.http_upgrade import UpgradeRefused
from tests.support.spdy_client import ExecResult, SpdyExec, SpdyPortForward, exec_url
from tests.support.ws_client import WsExec, WsPortForward, ws_exec

HTTPD = ("mkdir -p /tmp/www && echo pod-body > /tmp/www/index.html && "
         "exec httpd -f -p 8080 -h /tmp/www")


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        yield e


@pytest.fixture(scope="module")
def sleeper(env: ContainerEnv) -> str:
    return env.run(["sleep", "3600"])


def exec_request(cid: str, cmd: list[str], stdin: bool = False, tty: bool = False,
                 stderr: bool = True) -> api_pb2.ExecRequest:
    return api_pb2.ExecRequest(container_id=cid, cmd=cmd, stdin=stdin, stdout=True,
                               stderr=stderr and not tty, tty=tty)


def exec_url_for(env: ContainerEnv, req: api_pb2.ExecRequest) -> str:
    return str(env.cri.Exec(req).url)


def processes(env: ContainerEnv, cid: str) -> str:
    return env.exec_sync(cid, ["ps", "-o", "args"]).stdout.decode()


def test_spdy_exec_stdin_and_exit_code(env: ContainerEnv, sleeper: str) -> None:
    url = exec_url_for(env, exec_request(sleeper, ["sh", "-c", "cat; echo oops >&2; exit 3"],
                                         stdin=True))
    assert url.startswith("http://127.0.0.1:")
    result = exec_url(url, stdin=b"into the container\n")
    assert result.stdout == b"into the container\n"
    assert result.stderr == b"oops\n"
    assert result.exit_code == 3
    assert result.status is not None
    assert result.status["reason"] == "NonZeroExitCode"


def test_spdy_exec_without_stdin(env: ContainerEnv, sleeper: str) -> None:
    result = exec_url(exec_url_for(env, exec_request(sleeper, ["hostname"])))
    assert result.stdout == b"ctr-test-pod\n" and result.exit_code == 0


def test_spdy_exec_tty_resize_reaches_the_pty(env: ContainerEnv, sleeper: str) -> None:
    url = exec_url_for(env, exec_request(sleeper, ["sh", "-c", "read x; stty size"],
                                         stdin=True, tty=True))
    ex = SpdyExec(url, stdin=True, stderr=False, tty=True)
    ex.resize(132, 43)
    time.sleep(0.2)  # let the resize land before the command reads the size
    ex.write(b"go\n")
    result = ex.finish()
    assert b"43 132" in result.stdout and result.exit_code == 0


def test_ws_exec_v5_and_v4(env: ContainerEnv, sleeper: str) -> None:
    for protocol in (kp.V5, kp.V4):
        url = exec_url_for(env, exec_request(sleeper, ["sh", "-c", "head -n 1; exit 4"],
                                             stdin=True))
        result = ws_exec(url, stdin=b"ws line\n", protocol=protocol)
        assert result.protocol == protocol
        assert result.stdout == b"ws line\n" and result.exit_code == 4


def test_ws_exec_tty(env: ContainerEnv, sleeper: str) -> None:
    url = exec_url_for(env, exec_request(sleeper, ["sh", "-c", "read x; stty size"],
                                         stdin=True, tty=True))
    ex = WsExec(url, stdin=True, tty=True)
    ex.resize(90, 21)
    time.sleep(0.2)
    ex.write(b"go\n")
    assert b"21 90" in ex.finish().stdout


def test_token_reuse_is_refused(env: ContainerEnv, sleeper: str) -> None:
    url = exec_url_for(env, exec_request(sleeper, ["true"]))
    assert exec_url(url).exit_code == 0
    with pytest.raises(UpgradeRefused) as err:
        exec_url(url)
    assert err.value.status == 404


def test_twenty_concurrent_exec_sessions(env: ContainerEnv, sleeper: str) -> None:
    results: dict[int, ExecResult] = {}

    def one(i: int) -> None:
        url = exec_url_for(env, exec_request(sleeper, ["sh", "-c", f"cat; exit {i % 4}"],
                                             stdin=True))
        results[i] = exec_url(url, stdin=f"session {i}\n".encode(), timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(20))
    for i, r in results.items():
        assert r.stdout == f"session {i}\n".encode() and r.exit_code == i % 4


def test_client_killed_mid_exec_leaves_no_process(env: ContainerEnv, sleeper: str) -> None:
    url = exec_url_for(env, exec_request(sleeper, ["sh", "-c", "echo up; exec sleep 4242"]))
    ex = SpdyExec(url)
    ex.read_until(b"up\n")
    assert "sleep 4242" in processes(env, sleeper)
    ex.abort()
    assert pods.wait_until(lambda: "sleep 4242" not in processes(env, sleeper)), \
        "timed out waiting for the exec to be killed"


def test_attach_to_a_container_echoing_stdin(env: ContainerEnv) -> None:
    cid = env.run(["sh", "-c", "echo ready; cat"], stdin=True)
    url = str(env.cri.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True,
                                                   stderr=True)).url)
    ex = SpdyExec(url, stdin=True)
    ex.write(b"echo me\n")
    assert b"echo me\n" in ex.read_until(b"echo me\n")
    ex.close_stdin()
    ex.session.close()
    lines = [text for stream, text in env.log_lines(cid) if stream == "stdout"]
    assert any("echo me" in line for line in lines)


def test_port_forward_http_get(env: ContainerEnv) -> None:
    cid = env.run(["sh", "-c", HTTPD])
    url = str(env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id,
                                                             port=[8080])).url)
    with SpdyPortForward(url) as pf:
        deadline = time.monotonic() + 10
        while True:
            body, err = pf.request(8080, b"GET /index.html HTTP/1.0\r\n\r\n")
            if body or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # httpd not listening yet
        assert b"200 OK" in body and body.endswith(b"pod-body\n"), (body, err)
        body, err = pf.request(9, b"x")  # nothing listens on 9
        assert body == b"" and b"error forwarding port 9" in err
    url = str(env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id,
                                                             port=[8080])).url)
    with WsPortForward(url, [8080]) as wpf:
        wpf.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
        assert wpf.read_data_until(0, b"pod-body\n").startswith(b"HTTP/1.")
    env.remove(cid)
