"""ExecSync and the streaming RPCs (Exec, Attach, PortForward) end to end: real containers,
the daemon's streaming server, and the tests' own SPDY and WebSocket clients."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from proto import api_pb2
from tests.support import pods, spdy_client, ws_client
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error
from tests.support.daemon import TEST_SUBNET
from tests.support.registry import free_port

HTTPD_PORT = 8080


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        yield e


@pytest.fixture(scope="module")
def box(env: ContainerEnv) -> str:
    """A running container shared by the exec tests (runs as www-data in /tmp)."""
    return env.run(["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                   envs=[api_pb2.KeyValue(key="CTR_ENV", value=b"yes")], working_dir="/tmp",
                   linux=api_pb2.LinuxContainerConfig(
                       security_context=api_pb2.LinuxContainerSecurityContext(
                           run_as_user=api_pb2.Int64Value(value=33), no_new_privs=True)))


def _exec_url(env: ContainerEnv, cid: str, cmd: list[str], tty: bool = False,
              stdin: bool = False) -> str:
    return str(env.cri.Exec(api_pb2.ExecRequest(container_id=cid, cmd=cmd, tty=tty, stdin=stdin,
                                                stdout=True, stderr=not tty)).url)


def _pids_of(marker: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmd:
                out.append(int(entry))
    return out


def _listening(env: ContainerEnv, cid: str, port: int) -> bool:
    """Something listens on TCP `port` in the container's network namespace."""
    tables = env.exec_sync(cid, ["sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null"])
    for line in tables.stdout.decode().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return True
    return False


def _log_grows(env: ContainerEnv, cid: str) -> bool:
    """The container logs more records from now on (it is still running)."""
    count = len(env.log_lines(cid))
    return pods.wait_until(lambda: len(env.log_lines(cid)) > count)


# -- ExecSync ---------------------------------------------------------------------------------

def test_exec_sync_output_exit_code_and_context(env: ContainerEnv, box: str) -> None:
    r = env.exec_sync(box, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 3)
    script = "id -u; pwd; echo $CTR_ENV; grep NoNewPrivs /proc/self/status; cat /proc/1/comm; true"
    r = env.exec_sync(box, ["sh", "-c", script])
    lines = r.stdout.decode().split("\n")
    assert lines[0] == "33" and lines[1] == "/tmp" and lines[2] == "yes"
    assert lines[3].split() == ["NoNewPrivs:", "1"]
    # same pid namespace as the container (its PID 1 is the container's sh)
    assert lines[4] == "sh"
    try:   # a missing command is a failure (an error, or a non-zero exit), never a hang
        assert env.exec_sync(box, ["/no/such/cmd"]).exit_code != 0
    except grpc.RpcError as exc:
        assert "/no/such/cmd" in (exc.details() or "")


def test_exec_is_forked_into_the_pid_namespace_and_the_monitor_keeps_its_own(
        daemon, env: ContainerEnv, box: str) -> None:  # type: ignore[no-untyped-def]
    """The monitor points its children's pid namespace at the container's for the exec's one
    fork (no second fork inside, runtime.shim.spawn.fork_exec): the exec'd process has a pid
    of the container's namespace, and the monitor's next children are in its own again
    (else the next pod's init would start inside this container's namespace)."""
    [monitor] = pods.monitor_pids_of(daemon.base)
    r = env.exec_sync(box, ["sh", "-c", "echo $$; grep -E '^(PPid|NSpid):' /proc/self/status"])
    assert r.exit_code == 0, r.stderr
    pid, ppid, nspid = r.stdout.decode().split("\n")[:3]
    assert ppid.split() == ["PPid:", "0"]          # its parent is outside the namespace
    assert nspid.split()[1:] == [pid]              # one level: born in the container's
    assert 1 < int(pid) < 1000
    ns = {n: os.stat(f"/proc/{monitor}/ns/{n}").st_ino for n in ("pid", "pid_for_children")}
    assert ns["pid"] == ns["pid_for_children"], ns
    assert ns["pid"] == os.stat("/proc/self/ns/pid").st_ino   # the host's


def test_exec_sync_process_is_in_the_container_cgroup(env: ContainerEnv, box: str) -> None:
    """An exec'd process is in the container's cgroup in every hierarchy, where its init is
    (hybrid here: the shim clones it into the unified hierarchy's cgroup and it moves itself
    into each v1 one through `tasks`; on v2, tests/vm, it is cloned straight into the
    cgroup: runtime.cgroups.clone_into, Cgroup.join_self)."""
    out = env.exec_sync(box, ["sh", "-c", "cat /proc/self/cgroup; echo --; cat /proc/1/cgroup"])
    assert out.exit_code == 0, out.stderr
    mine, _, init = out.stdout.decode().partition("--\n")
    assert mine == init and mine.strip(), out.stdout
    # the container's own cgroup (its id), or "/" inside a cgroup namespace (v2)
    assert all(line.endswith((":/", "/" + box)) for line in mine.splitlines()), mine


def test_exec_sync_large_output_is_capped(env: ContainerEnv, box: str) -> None:
    r = env.exec_sync(box, ["head", "-c", str(20 << 20), "/dev/zero"], timeout=30)
    assert r.exit_code == 0 and len(r.stdout) == 16 << 20 and set(r.stdout) == {0}
    r = env.exec_sync(box, ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' 'e' >&2"])
    assert len(r.stderr) == 3000000


def test_exec_sync_timeout_kills_the_command(env: ContainerEnv, box: str) -> None:
    t0 = time.monotonic()
    err = rpc_error(env.exec_sync, box, ["sleep", "7777"], 1)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in err.details()
    assert time.monotonic() - t0 < 5
    assert pods.wait_until(lambda: not _pids_of("sleep 7777"), timeout=5), \
        "the timed out command is still running"


def test_exec_sync_rejects_nul_in_the_command(env: ContainerEnv, box: str) -> None:
    err = rpc_error(env.exec_sync, box, ["echo", "a\0b"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in err.details()
    err = rpc_error(_exec_url, env, box, ["echo", "a\0b"])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in err.details()


def test_exec_sync_needs_a_running_container(env: ContainerEnv) -> None:
    cid = env.create(env.config(["sleep", "100"]))
    assert rpc_error(env.exec_sync, cid, ["true"]).code() == grpc.StatusCode.FAILED_PRECONDITION
    env.remove(cid)
    assert rpc_error(env.exec_sync, cid, ["true"]).code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(env.cri.Exec, api_pb2.ExecRequest(container_id="0" * 64, cmd=["true"],
                                                      stdout=True))
    assert err.code() == grpc.StatusCode.NOT_FOUND


# -- streaming exec -----------------------------------------------------------------------------

def test_spdy_exec_no_tty(env: ContainerEnv, box: str) -> None:
    res = spdy_client.exec_url(_exec_url(env, box, ["sh", "-c", "echo o; echo e >&2; exit 4"]))
    assert (res.stdout, res.stderr, res.exit_code) == (b"o\n", b"e\n", 4)
    res = spdy_client.exec_url(_exec_url(env, box, ["cat"], stdin=True), stdin=b"piped\n")
    assert res.stdout == b"piped\n" and res.exit_code == 0


def test_spdy_exec_tty_and_resize(env: ContainerEnv, box: str) -> None:
    url = _exec_url(env, box, ["sh", "-c", "sleep 0.3; stty size; busybox tty"], tty=True)
    res = spdy_client.exec_url(url, tty=True, resize=[(100, 30)])
    text = res.stdout.decode()
    assert "30 100" in text and "/dev/pts/" in text and res.exit_code == 0
    ex = spdy_client.SpdyExec(_exec_url(env, box, ["sh"], tty=True, stdin=True), stdin=True,
                              tty=True)
    ex.write(b"echo in-$((6*7))\n")
    assert b"in-42" in ex.read_until(b"in-42")
    ex.write(b"exit 5\n")
    assert ex.finish().exit_code == 5


def test_websocket_exec(env: ContainerEnv, box: str) -> None:
    res = ws_client.ws_exec(_exec_url(env, box, ["sh", "-c", "cat; echo e >&2; exit 2"],
                                      stdin=True), stdin=b"via ws\n")
    assert (res.stdout, res.stderr, res.exit_code) == (b"via ws\n", b"e\n", 2)
    res = ws_client.ws_exec(_exec_url(env, box, ["sh", "-c", "sleep 0.3; stty size"], tty=True),
                            tty=True, resize=[(81, 25)])
    assert b"25 81" in res.stdout


def test_exec_token_is_single_use(env: ContainerEnv, box: str) -> None:
    url = _exec_url(env, box, ["true"])
    assert spdy_client.exec_url(url).exit_code == 0
    with pytest.raises(Exception) as info:
        spdy_client.exec_url(url)
    assert "404" in str(info.value)


def test_client_killed_mid_exec_leaves_no_process(env: ContainerEnv, box: str) -> None:
    ex = spdy_client.SpdyExec(_exec_url(env, box, ["sh", "-c", "echo started; sleep 8888"]))
    assert b"started" in ex.read_until(b"started")
    assert _pids_of("sleep 8888")
    ex.abort()
    assert pods.wait_until(lambda: not _pids_of("sleep 8888")), "exec process survived its client"


def test_concurrent_exec_sessions(env: ContainerEnv, box: str) -> None:
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            res = spdy_client.exec_url(_exec_url(env, box, ["echo", f"n{i}"]), timeout=30)
            results[i] = res.stdout
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == {i: f"n{i}\n".encode() for i in range(20)}


# -- attach -----------------------------------------------------------------------------------

def test_attach_to_a_container_echoing_stdin(env: ContainerEnv) -> None:
    cid = env.run(["sh", "-c", "while read line; do echo got:$line; done; echo bye"],
                  stdin=True, stdin_once=True)
    url = env.cri.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True,
                                               stderr=True)).url
    ex = spdy_client.SpdyExec(url, stdin=True)
    ex.write(b"hello\n")
    assert b"got:hello" in ex.read_until(b"got:hello")
    ex.close_stdin()             # stdin_once: the container's stdin closes with it
    res = ex.finish()
    assert b"bye" in res.stdout
    st = env.wait_exit(cid)
    assert st.exit_code == 0
    # the output also went to the log
    assert ("stdout", "got:hello\n") in env.log_lines(cid)
    env.remove(cid)


def test_attach_stdin_written_and_closed_at_once(env: ContainerEnv) -> None:
    cid = env.run(["sh", "-c", "while read line; do echo got:$line; done; echo bye"],
                  stdin=True, stdin_once=True)
    url = env.cri.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True,
                                               stderr=True)).url
    res = spdy_client.exec_url(url, stdin=b"a\nb\n")    # data then EOF, no waiting between
    assert res.stdout == b"got:a\ngot:b\nbye\n"
    assert env.wait_exit(cid).exit_code == 0
    env.remove(cid)


def test_attach_websocket_and_without_stdin(env: ContainerEnv) -> None:
    cid = env.run(["sh", "-c", "while true; do echo tick; sleep 0.1; done"])
    url = env.cri.Attach(api_pb2.AttachRequest(container_id=cid, stdout=True,
                                               stderr=True)).url
    ex = ws_client.WsExec(url)
    assert b"tick" in ex.read_until(b"tick")
    ex.abort()                   # detaching leaves the container running
    assert _log_grows(env, cid)
    assert env.status(cid).state == api_pb2.CONTAINER_RUNNING
    err = rpc_error(env.cri.Attach, api_pb2.AttachRequest(container_id="0" * 64, stdout=True))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    env.remove(cid)


# -- port-forward -------------------------------------------------------------------------------

def test_port_forward_to_httpd_in_the_pod(env: ContainerEnv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from the pod\n")
    cid = env.run(["httpd", "-f", "-p", str(HTTPD_PORT), "-h", "/www"],
                  mounts=[api_pb2.Mount(container_path="/www", host_path=str(www),
                                        readonly=True)])
    assert pods.wait_until(lambda: _listening(env, cid, HTTPD_PORT))
    url = env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id,
                                                         port=[HTTPD_PORT])).url
    with spdy_client.SpdyPortForward(url) as pf:
        body, err = pf.request(HTTPD_PORT, b"GET /index.html HTTP/1.0\r\n\r\n")
        assert b"200 OK" in body and body.endswith(b"hello from the pod\n"), (body, err)
        body, err = pf.request(HTTPD_PORT + 1, b"GET / HTTP/1.0\r\n\r\n")
        assert err, "nothing listens on that port: the error stream says so"
    url = env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id)).url
    with ws_client.WsPortForward(url, [HTTPD_PORT]) as wpf:
        wpf.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
        assert b"hello from the pod" in wpf.read_data_until(0, b"hello from the pod")
    # the pod's own address is not reachable from here without the forward (isolation check)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{HTTPD_PORT}/", timeout=1)
    err = rpc_error(env.cri.PortForward, api_pb2.PortForwardRequest(pod_sandbox_id="f" * 64))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    env.remove(cid)


def test_host_port_reaches_a_listening_container(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    host_port = free_port()
    cfg = pods.pod_config(port_mappings=[api_pb2.PortMapping(
        protocol=api_pb2.TCP, container_port=HTTPD_PORT, host_port=host_port)])
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("via hostPort\n")
    with ContainerEnv(daemon.c, pod_config=cfg) as env:
        httpd = env.run(["httpd", "-f", "-p", str(HTTPD_PORT), "-h", "/www"],
                        mounts=[api_pb2.Mount(container_path="/www", host_path=str(www))])
        assert pods.wait_until(lambda: _listening(env, httpd, HTTPD_PORT))
        # the host's own address on the pod bridge (portmap DNATs local traffic in OUTPUT)
        route = subprocess.run(["ip", "-4", "route", "show", TEST_SUBNET], capture_output=True,
                               text=True, check=True).stdout.split()
        host_ip = route[route.index("src") + 1]
        with socket.create_connection((host_ip, host_port), timeout=5) as s:
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
        assert b"200 OK" in body and body.endswith(b"via hostPort\n"), body


def test_attach_to_a_tty_container(env: ContainerEnv) -> None:
    cid = env.run(["sh"], stdin=True, tty=True)
    url = env.cri.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True, stdout=True,
                                               tty=True)).url
    ex = spdy_client.SpdyExec(url, stdin=True, tty=True)
    ex.resize(90, 33)
    out = b""
    for i in range(50):  # the resize frame and stdin travel apart: ask until the size landed
        ex.write(f"stty size; echo tty-{i}-$((40+2))\n".encode())
        out = ex.read_until(f"tty-{i}-42".encode())
        if b"33 90" in out:
            break
    assert b"33 90" in out
    ex.abort()
    again = spdy_client.SpdyExec(env.cri.Attach(api_pb2.AttachRequest(
        container_id=cid, stdin=True, stdout=True, tty=True)).url, stdin=True, tty=True)
    again.write(b"echo still-$((1+1))\n")  # the shell still reads its terminal
    assert b"still-2" in again.read_until(b"still-2")
    again.abort()
    assert env.status(cid).state == api_pb2.CONTAINER_RUNNING  # detaching keeps it running
    env.remove(cid)


def test_streaming_sessions_leave_no_fd_or_thread_in_the_daemon(daemon, env: ContainerEnv,  # type: ignore[no-untyped-def]
                                                                box: str) -> None:
    pid = daemon.proc.pid

    def fds() -> dict[str, str]:
        out = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                pass
        return out

    def counts() -> tuple[int, int]:
        return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))

    def settle(limit: tuple[int, int]) -> tuple[int, int]:
        def within() -> bool:
            fd_count, threads = counts()
            return fd_count <= limit[0] and threads <= limit[1]
        pods.wait_until(within, interval=0.2)
        return counts()

    def steady() -> tuple[int, int]:
        """The counts once two reads 0.2 s apart agree (the warm-up's threads have ended)."""
        seen = [counts()]

        def unchanged() -> bool:
            seen.append(counts())
            return seen[-1] == seen[-2]
        pods.wait_until(unchanged, interval=0.2)
        return seen[-1]

    spdy_client.exec_url(_exec_url(env, box, ["true"]))       # warm up pools and threads
    env.exec_sync(box, ["true"])
    before, before_fds = steady(), fds()
    for i in range(5):
        spdy_client.exec_url(_exec_url(env, box, ["echo", str(i)]))
        ws_client.ws_exec(_exec_url(env, box, ["cat"], stdin=True), stdin=b"x")
        spdy_client.exec_url(_exec_url(env, box, ["sh", "-c", "stty size"], tty=True), tty=True)
        env.exec_sync(box, ["echo", "sync"])
    for _ in range(3):
        ex = spdy_client.SpdyExec(_exec_url(env, box, ["sh", "-c", "echo up; sleep 6666"]))
        ex.read_until(b"up")
        ex.abort()
    cid = env.run(["sh", "-c", "while true; do echo a; sleep 0.1; done"])
    for _ in range(3):
        att = spdy_client.SpdyExec(env.cri.Attach(api_pb2.AttachRequest(
            container_id=cid, stdout=True, stderr=True)).url)
        att.read_until(b"a")
        att.abort()
    env.remove(cid)
    after = settle(before)
    new_fds = {fd: target for fd, target in fds().items() if before_fds.get(fd) != target}
    # A busy machine may grow gRPC's worker pool by a thread, which opens its own sqlite
    # connection (the database and its WAL): that is not a session's leftover.
    pool_fds = [t for t in new_fds.values() if t.endswith(("/runtime.db", "/runtime.db-wal"))]
    grown = len(pool_fds) // 2
    assert after[0] <= before[0] + len(pool_fds) and after[1] <= before[1] + grown, (
        before, after, new_fds)
    assert not _pids_of("sleep 6666")


def test_port_forward_in_a_host_network_pod(daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("host network\n")
    with ContainerEnv(daemon.c, pod_config=pods.pod_config(host_network=True)) as env:
        httpd = env.run(["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
                        mounts=[api_pb2.Mount(container_path="/www", host_path=str(www))])
        assert pods.wait_until(lambda: _listening(env, httpd, port))
        url = env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id,
                                                             port=[port])).url
        with spdy_client.SpdyPortForward(url) as pf:
            body, err = pf.request(port, b"GET /index.html HTTP/1.0\r\n\r\n")
        assert body.endswith(b"host network\n"), (body, err)
