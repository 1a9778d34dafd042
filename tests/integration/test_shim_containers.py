"""Container lifecycle through a pod shim: create/start/exit/kill/logs/attach/exec (root).

The shim forks the real runtime.container_init."""
from __future__ import annotations

import json
import os
import pty
import signal
import time
from collections.abc import Iterator

import pytest

from pycri_common import errors
from runtime import cgroups
from runtime.container_spec import ContainerSpec
from runtime.shim import frames
from runtime.shim.protocol import ContainerState, ExecWaitReply
from runtime.shim_client import ShimClient, read_states
from tests.integration.shim_support import ShimEnv, read_cri_log, wait_gone


@pytest.fixture(scope="module")
def env(shim_env: ShimEnv) -> ShimEnv:
    return shim_env


_pods = iter(range(1000))


@pytest.fixture
def pod(env: ShimEnv) -> Iterator[tuple[ShimClient, str]]:
    pod_id = f"cp{next(_pods)}"
    client, info = env.spawn(pod_id, pid="pod")
    try:
        yield client, pod_id
    finally:
        client.shutdown(grace=0)
        del env.pods[pod_id]
        assert wait_gone([info["pause_pid"]])


def run_to_exit(env: ShimEnv, client: ShimClient, pod_id: str, cid: str, args: list[str],
                **kw: object) -> tuple[ContainerState, ContainerSpec]:
    spec = env.container_spec(cid, pod_id, args, **kw)  # type: ignore[arg-type]
    client.create(cid, spec)
    client.start(cid)
    return client.wait(cid, 10), spec


def test_create_start_exit_code_logs_and_status_file(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    spec = env.container_spec("c1", pod_id, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    created = client.create("c1", spec)
    assert created.pid > 0 and created.user["uid"] == 0
    st = client.state("c1")["c1"]
    assert st.state == "created" and st.created_at > 0 and st.started_at == 0
    shim_dir = env.pods[pod_id]["spec"]["shim_dir"]
    assert read_states(shim_dir)["c1"].state == "created"
    started = client.start("c1")
    final = client.wait("c1", 10)
    assert final.state == "exited" and final.exit_code == 3 and final.reason == "Error"
    assert final.started_at == started <= final.finished_at
    assert read_states(shim_dir)["c1"] == final
    logs = read_cri_log(spec.log_path)
    assert sorted((s, t, x) for _, s, t, x in logs) == [("stderr", "F", "err"),
                                                       ("stdout", "F", "out")]
    assert all(ts.endswith("Z") and "T" in ts for ts, *_ in logs)
    with pytest.raises(errors.FailedPrecondition):
        client.start("c1")
    with pytest.raises(errors.AlreadyExists):
        client.create("c1", spec)
    assert client.delete("c1") is True
    assert "c1" not in read_states(shim_dir)
    with pytest.raises(errors.NotFound):
        client.state("c1")


def test_exit_zero_is_completed_and_kill_gives_128_plus_signal(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    final, _ = run_to_exit(env, client, pod_id, "ok", ["true"])
    assert (final.exit_code, final.reason) == (0, "Completed")
    spec = env.container_spec("sleeper", pod_id, ["sleep", "60"])
    client.create("sleeper", spec)
    client.start("sleeper")
    waited = client.wait("sleeper", 0.2)
    assert waited.state == "running"
    client.kill("sleeper", signal.SIGKILL)
    final = client.wait("sleeper", 10)
    assert (final.exit_code, final.reason) == (137, "Error")
    client.kill("sleeper", signal.SIGTERM)  # exited: a no-op


def test_exec_failure_of_entrypoint_is_reported_at_start(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    spec = env.container_spec("noexe", pod_id, ["/no/such/binary"])
    try:
        client.create("noexe", spec)
    except errors.PycriError as e:  # the real init checks the executable before the gate
        assert "no/such/binary" in str(e)
        with pytest.raises(errors.NotFound):  # a failed create leaves nothing behind
            client.state("noexe")
        return
    with pytest.raises(errors.PycriError, match="no/such/binary"):
        client.start("noexe")
    final = client.wait("noexe", 10)
    assert final.state == "exited" and final.exit_code in (126, 127)


def test_only_stdio_fds_reach_the_container(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    for tty in (False, True):
        cid = f"fds{int(tty)}"
        client.create(cid, env.container_spec(cid, pod_id, ["sleep", "60"], tty=tty,
                                               stdin=True))
        client.start(cid)
        pid = client.state(cid)[cid].pid
        # Start returns once the init is released; its own (close-on-exec) fds go at execve,
        # and the kernel switches /proc/<pid>/exe a moment before it closes them: wait for
        # both (a leaked fd stays, and the assertion names it)
        deadline = time.monotonic() + 10
        while "python" in os.readlink(f"/proc/{pid}/exe") or _fds(pid) != [0, 1, 2]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        fds = _fds(pid)
        assert fds == [0, 1, 2], {fd: _fd_target(pid, fd) for fd in fds}
        client.delete(cid)


def _fds(pid: int) -> list[int]:
    return sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))


def _fd_target(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError as e:
        return str(e)


def test_long_line_is_split_in_the_log(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    final, spec = run_to_exit(env, client, pod_id, "long",
                              ["sh", "-c", "yes a | head -c 80000 | tr -d '\\n'; echo; echo z"])
    assert final.exit_code == 0
    logs = read_cri_log(spec.log_path)
    tags = [t for _, _, t, _ in logs]  # how many P: as the reads came (each written at once)
    assert tags[-2:] == ["F", "F"] and set(tags[:-2]) == {"P"} and len(tags) >= 4
    assert all(len(x) <= 16384 for _, _, _, x in logs)
    assert "".join(x for _, _, _, x in logs[:-1]) == "a" * 40000 and logs[-1][3] == "z"


def test_reopen_log_after_rotation(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    spec = env.container_spec("rot", pod_id, ["sh", "-c",
                                              "echo one; read x; echo two; sleep 60"],
                              stdin=True)
    client.create("rot", spec)
    client.start("rot")
    log_path = spec.log_path
    assert log_path
    _wait_for(lambda: "one" in _read(log_path))
    os.rename(log_path, f"{log_path}.1")
    client.reopen_log("rot")
    with client.attach("rot") as stream:
        stream.send_stdin(b"go\n")
        _wait_for(lambda: "two" in _read(log_path))
    assert [x for *_, x in read_cri_log(f"{log_path}.1")] == ["one"]
    client.kill("rot", signal.SIGKILL)
    client.wait("rot", 10)
    with pytest.raises(errors.FailedPrecondition):
        client.reopen_log("rot")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_attach_fan_out_stdin_and_exit_frame(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    script = "while read l; do echo got:$l; done; echo bye >&2; exit 5"
    spec = env.container_spec("cat", pod_id, ["sh", "-c", script],
                              stdin=True, stdin_once=True)
    client.create("cat", spec)
    first = client.attach("cat")
    second = client.attach("cat")
    client.start("cat")
    first.send_stdin(b"hello\n")
    assert _collect(first, b"got:hello\n") and _collect(second, b"got:hello\n")
    second.close()  # a client without stdin going away does not close the container's stdin
    first.send_stdin(b"again\n")
    assert _collect(first, b"got:again\n")
    first.close_stdin()  # stdin_once: the container's stdin closes -> loop ends
    out, exited = _drain(first)
    assert b"bye\n" in out[frames.STDERR]
    assert exited is not None and exited["exit_code"] == 5
    first.close()
    assert [x for _, s, _, x in read_cri_log(spec.log_path) if s == "stdout"] == ["got:hello", "got:again"]


def _collect(stream, want: bytes, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    got = b""
    deadline = time.monotonic() + timeout
    while want not in got:
        frame = stream.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
        if frame is None:
            return False
        if frame[0] == frames.STDOUT:
            got += frame[1]
    return True


def _drain(stream):  # type: ignore[no-untyped-def]
    out = {frames.STDOUT: b"", frames.STDERR: b""}
    exited = None
    while True:
        frame = stream.recv_frame(timeout=10)
        if frame is None:
            return out, exited
        if frame[0] == frames.EXITED:
            exited = json.loads(frame[1])
        else:
            out[frame[0]] += frame[1]


def test_attach_client_that_never_reads_does_not_block_the_container(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    line = "x" * 99  # 100 bytes with the newline; 6 MB is more than the 2 MiB client buffer
    script = f"yes {line} | head -c 6000000; echo done"
    spec = env.container_spec("flood", pod_id, ["sh", "-c", script])
    client.create("flood", spec)
    stuck = client.attach("flood")  # never reads: its socket buffer fills up
    client.start("flood")
    final = client.wait("flood", 30)
    assert final.exit_code == 0
    logs = read_cri_log(spec.log_path)
    full = [t for _, _, t, _ in logs].count("F")  # a line cut by a read is P then F
    assert logs[-1][3] == "done" and full == 60_001
    assert "".join(x + ("\n" if t == "F" else "") for _, _, t, x in logs) == (
        f"{line}\n" * 60_000 + "done\n")
    assert client.hello().pod_id == pod_id  # the shim still serves
    out, exited = _drain(stuck)  # what was kept for the slow client, then the exit frame
    assert 0 < len(out[frames.STDOUT]) < 6_000_000
    assert exited is not None and exited["exit_code"] == 0
    stuck.close()


def test_attach_to_exited_container_is_refused(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    run_to_exit(env, client, pod_id, "done", ["true"])
    with pytest.raises(errors.FailedPrecondition):
        client.attach("done")


def test_tty_container_resize_and_output(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    spec = env.container_spec("tty", pod_id, ["sh", "-c", "read x; stty size; exit 0"],
                              tty=True, stdin=True)
    client.create("tty", spec)
    stream = client.attach("tty")
    client.start("tty")
    stream.resize(width=91, height=37)
    time.sleep(0.05)
    stream.send_stdin(b"\n")
    out, exited = _drain(stream)
    stream.close()
    assert b"37 91" in out[frames.STDOUT] and out[frames.STDERR] == b""
    assert exited is not None and exited["exit_code"] == 0
    assert any("37 91" in x for *_, x in read_cri_log(spec.log_path))


def test_exec_stdio_exit_code_and_timeout(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    spec = env.container_spec("svc", pod_id, ["sleep", "60"])
    client.create("svc", spec)
    with pytest.raises(errors.FailedPrecondition):
        client.exec("svc", {"args": ["true"]}, [0, 1, 2])
    client.start("svc")
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    res = client.exec("svc", {"args": ["sh", "-c", "read x; echo out:$x; echo e >&2; exit 9"]},
                      [in_r, out_w, err_w])
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    os.write(in_w, b"ping\n")
    os.close(in_w)
    assert client.exec_wait(res.exec_id, 10) == ExecWaitReply(9, timed_out=False)
    assert os.read(out_r, 100) == b"out:ping\n" and os.read(err_r, 100) == b"e\n"
    for fd in (out_r, err_r):
        os.close(fd)
    null = os.open("/dev/null", os.O_RDWR)
    try:
        slow = client.exec("svc", {"args": ["sleep", "30"]}, [null, null, null])
        t0 = time.monotonic()
        assert client.exec_wait(slow.exec_id, 0.3) == ExecWaitReply(137, timed_out=True)
        assert time.monotonic() - t0 < 5
        assert wait_gone([slow.pid])
        killed = client.exec("svc", {"args": ["sleep", "30"]}, [null, null, null])
        client.exec_kill(killed.exec_id, signal.SIGTERM)
        assert client.exec_wait(killed.exec_id, 10).exit_code == 128 + signal.SIGTERM
        with pytest.raises(errors.NotFound):
            client.exec_wait(killed.exec_id, 1)
        with pytest.raises(errors.PycriError, match="no-such-cmd"):
            client.exec("svc", {"args": ["no-such-cmd"]}, [null, null, null])
    finally:
        os.close(null)


def _exit_of(pending) -> ExecWaitReply:  # type: ignore[no-untyped-def]
    import select
    try:
        while True:
            select.select([pending], [], [], 10)
            reply = pending.read()
            if reply is not None:
                return reply
    finally:
        pending.close()


def test_exec_with_wait_answers_with_the_exit(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    """exec with wait (ExecSync's one connection): the answer is the exit, after a timeout
    the kill; a failed exec is the error itself."""
    client, pod_id = pod
    client.create("svc", env.container_spec("svc", pod_id, ["sleep", "60"]))
    client.start("svc")
    null = os.open("/dev/null", os.O_RDWR)
    try:
        assert _exit_of(client.exec_until_exit("svc", {"args": ["sh", "-c", "exit 7"]},
                                               [null, null, null])) == ExecWaitReply(7, False)
        t0 = time.monotonic()
        assert _exit_of(client.exec_until_exit("svc", {"args": ["sleep", "30"]},
                                               [null, null, null], 0.3)) == \
            ExecWaitReply(137, timed_out=True)
        assert time.monotonic() - t0 < 5
        with pytest.raises(errors.PycriError, match="no-such-cmd"):
            _exit_of(client.exec_until_exit("svc", {"args": ["no-such-cmd"]},
                                            [null, null, null]))
    finally:
        os.close(null)


def test_exec_with_tty(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    client.create("ttyexec", env.container_spec("ttyexec", pod_id, ["sleep", "60"]))
    client.start("ttyexec")
    master, slave = pty.openpty()
    try:
        res = client.exec("ttyexec", {"args": ["sh", "-c", "test -t 0 && echo isatty"],
                                      "tty": True}, [slave])
        os.close(slave)
        slave = -1
        assert client.exec_wait(res.exec_id, 10).exit_code == 0
        assert b"isatty" in os.read(master, 100)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_delete_running_and_shutdown_with_running_containers(env: ShimEnv) -> None:
    client, info = env.spawn("shutdown-pod", pid="pod")
    for cid in ("a", "b"):
        client.create(cid, env.container_spec(cid, "shutdown-pod", ["sleep", "60"]))
    client.start("a")
    pid_a = client.state("a")["a"].pid
    assert client.delete("a") is True
    assert wait_gone([pid_a])
    client.start("b")
    pid_b = client.state("b")["b"].pid
    client.create("c", env.container_spec("c", "shutdown-pod", ["sleep", "60"]))
    pid_c = client.state("c")["c"].pid
    t0 = time.monotonic()
    client.shutdown(grace=0.5)
    assert time.monotonic() - t0 < 5
    assert wait_gone([pid_b, pid_c, info["pause_pid"]])
    states = read_states(env.pods["shutdown-pod"]["spec"]["shim_dir"])
    assert states["b"].state == "exited" and states["b"].exit_code == 128 + signal.SIGTERM
    del env.pods["shutdown-pod"]


def test_oom_killed_container_reports_137_and_its_cgroup_is_removed(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    path = f"/pycri-shimtest-oom-{os.getpid()}"
    hog = "x=$(yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | head -c 300000000); echo survived"
    spec = env.container_spec("hog", pod_id, ["sh", "-c", hog], cgroup={
        "driver": "cgroupfs", "path": path,
        "resources": {"memory_limit_in_bytes": 24 << 20}})
    client.create("hog", spec)
    memory_dir = f"/sys/fs/cgroup/memory{path}"
    assert os.path.isdir(memory_dir)
    client.start("hog")
    final = client.wait("hog", 30)
    assert (final.exit_code, final.reason) == (137, "OOMKilled")
    assert not os.path.isdir(memory_dir)  # removed once the container exited


def test_oom_killed_under_the_systemd_driver_on_cgroup_v1(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    """v1's oom_kill count is per cgroup, so the pod slice's (what the systemd driver reads,
    the scope may be gone) never counts it: the shim's v1 OOM watcher on the scope does."""
    if cgroups.detect_mode() == "v2":
        pytest.skip("the cgroup v1 OOM watcher: this host is cgroup v2")
    client, pod_id = pod
    slice_path = f"/pycri-shimtest-oomsd-{os.getpid()}.slice"
    path = f"{slice_path}/hog.scope"
    cgroups.create_cgroup(path)  # what systemd does for the daemon's scope
    try:
        hog = "x=$(yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | head -c 300000000); echo survived"
        spec = env.container_spec("hog", pod_id, ["sh", "-c", hog], cgroup={
            "driver": "systemd", "path": path,
            "resources": {"memory_limit_in_bytes": 24 << 20}})
        client.create("hog", spec)
        client.start("hog")
        final = client.wait("hog", 30)
        assert (final.exit_code, final.reason) == (137, "OOMKilled")
    finally:
        cgroups.remove_cgroup(slice_path)


def test_many_containers_in_one_pod(env: ShimEnv, pod) -> None:  # type: ignore[no-untyped-def]
    client, pod_id = pod
    for i in range(10):
        client.create(f"m{i}", env.container_spec(f"m{i}", pod_id, ["sh", "-c", f"exit {i}"]))
        client.start(f"m{i}")
    codes = {cid: client.wait(cid, 10).exit_code for cid in (f"m{i}" for i in range(10))}
    assert codes == {f"m{i}": i for i in range(10)}
    assert set(client.hello().containers) == set(codes)
