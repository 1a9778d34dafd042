"""Re-adoption (runtime.shim.adopt): after kill -9 of a pod's shim -- alone, several times,
or together with the daemon -- a successor shim takes the pod back. The pod is READY again,
`hello` names the successor, no log line of a container writing all the time is lost or
written twice, an exit while no shim ran has its real code, exec/attach work, and Stop/Remove
leave no process behind."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from proto import api_pb2
from runtime.shim_client import ShimClient
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.daemon import SLOWDOWN, PycriDaemon
from tests.support.spdy_client import SpdyExec, SpdyPortForward

HTTPD = ("mkdir -p /tmp/www && echo pod-body > /tmp/www/index.html && "
         "exec httpd -f -p 8080 -h /tmp/www")
# numbered lines on stdout and stderr, a short pause every 20 (a few thousand lines a second)
WRITER = ("i=0; while :; do i=$((i+1)); echo out$i; echo err$i >&2; "
          "if [ $((i % 20)) -eq 0 ]; then sleep 0.01; fi; done")


def _shim_dir(env: ContainerEnv) -> Path:
    return Path(pods.info(env.cri, env.pod_id)["shimDir"])


def _shim_pid(shim_dir: Path) -> int:
    return int((shim_dir / "shim.pid").read_text())


def _pod_state(env: ContainerEnv) -> int:
    return int(env.cri.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
        pod_sandbox_id=env.pod_id)).status.state)


def _wait_adopted(env: ContainerEnv, shim_dir: Path, old_pid: int,
                  timeout: float = 20.0) -> tuple[int, float]:
    """(the successor's pid, seconds until it answered) once a new shim serves the pod."""
    started = time.monotonic()
    deadline = started + timeout * SLOWDOWN
    while True:
        try:
            hello = ShimClient(str(shim_dir)).hello(timeout=1)
            if hello.shim_pid != old_pid:
                return hello.shim_pid, time.monotonic() - started
        except Exception:  # noqa: BLE001 - not up yet
            pass
        assert time.monotonic() < deadline, "no successor shim took the pod back"
        time.sleep(0.005)   # no CRI call meanwhile: the daemon notices the death by itself


def _numbers(env: ContainerEnv, cid: str) -> dict[str, list[int]]:
    """The numbers of the writer's lines per stream, rotated log files (.1) first."""
    got: dict[str, list[int]] = {"stdout": [], "stderr": []}
    current = env.log_path(cid)
    rotated = current.with_name(current.name + ".1")
    records = env.log_lines(cid, rotated) if rotated.exists() else []
    for stream, text in records + env.log_lines(cid):
        prefix = "out" if stream == "stdout" else "err"
        assert text.startswith(prefix) and text.endswith("\n"), (stream, text)
        got[stream].append(int(text[len(prefix):-1]))
    return got


def _assert_complete(env: ContainerEnv, cid: str, at_least: int, kills: int) -> None:
    """Every line of the writer is in its log, in order. A monitor killed between the log
    write(2) of a chunk and the read(2) that consumes it from the pipe leaves the chunk to its
    successor, which logs it again (docs/architecture.md): at most one repeated run of lines
    per stream and kill, and never a line missing."""
    for stream, numbers in _numbers(env, cid).items():
        assert len(numbers) >= at_least, (stream, len(numbers))
        assert _repeated_runs(numbers) <= kills, (stream, kills, _summary(numbers))


def _repeated_runs(numbers: list[int]) -> int:
    """How many runs of already logged lines numbers holds; AssertionError for a gap or a
    repeat that does not go on where the line before it went on."""
    runs, top, prev = 0, 0, 0
    for n in numbers:
        if n == prev + 1 and n <= top + 1:     # the next line: new, or a repeat going on
            top = max(top, n)
        elif n <= top and prev == top:         # a repeat starting once all before is logged
            runs += 1
        else:
            raise AssertionError(f"after line {prev} (of {top}) came {n}: {_summary(numbers)}")
        prev = n
    return runs


def _summary(numbers: list[int]) -> str:
    dups = sorted({n for n in numbers if numbers.count(n) > 1})
    return f"{len(numbers)} lines up to {max(numbers, default=0)}, repeated {dups[:20]}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _pod_processes(shim_dir: Path) -> list[int]:
    """The pod's own processes (the monitor serving it serves other pods too)."""
    pids = [int((shim_dir / "pause.pid").read_text())]
    pids += [int(p.read_text()) for p in (shim_dir / "containers").glob("*.keeper")]
    return pids


def _assert_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 10 * SLOWDOWN
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, [p for p in pids if _alive(p)]
        time.sleep(0.05)


def _shims_of(shim_dir: Path) -> list[int]:
    """Live monitors holding the pod's shim.log: those serving it (one, never two)."""
    log = str(shim_dir / "shim.log")
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if Path(f"/proc/{name}/comm").read_text().strip() != "pycri-monitor":
                    continue
                fds = [os.readlink(f"/proc/{name}/fd/{fd}") for fd in os.listdir(f"/proc/{name}/fd")]
            except OSError:
                continue
            if any(fd.startswith(log) for fd in fds) and _alive(int(name)):
                found.append(int(name))
    return found


def _finish(env: ContainerEnv, writer: str, shim_dir: Path, kills: int) -> None:
    """Stop the writer (137), check its log line by line (`kills`: how often its monitor was
    killed), remove the pod: no shim, keeper or pause-holder of it is left."""
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=writer, timeout=0))
    assert env.wait_exit(writer).exit_code == 137
    _assert_complete(env, writer, at_least=100, kills=kills)
    procs = _pod_processes(shim_dir)
    pods.stop_and_remove(env.cri, env.pod_id)
    env.pod_id = ""
    env.created.clear()
    _assert_gone(procs)


def test_kill9_of_the_shim_a_successor_takes_the_pod_back(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    _, env = started
    writer = env.run(["sh", "-c", WRITER])
    ender = env.run(["sh", "-c", "trap 'echo bye; exit 7' TERM; while :; do sleep 0.05; done"])
    tty = env.run(["sh", "-c", "printf 'no newline yet'; sleep 1000"], tty=True)
    env.run(["sh", "-c", HTTPD])
    shim_dir = _shim_dir(env)
    time.sleep(0.5)
    old = _shim_pid(shim_dir)
    ender_pid = env.info(ender)["pid"]
    os.kill(old, signal.SIGKILL)
    os.kill(ender_pid, signal.SIGTERM)  # exits while no shim runs (the successor is not up)
    new, took = _wait_adopted(env, shim_dir, old)
    print(f"successor up {took * 1000:.0f} ms after the kill")
    assert new == _shim_pid(shim_dir) and not _alive(old)
    time.sleep(0.3)
    assert _shims_of(shim_dir) == [new]   # adopted once
    pods.wait_until(lambda: _pod_state(env) == api_pb2.SANDBOX_READY)
    assert _pod_state(env) == api_pb2.SANDBOX_READY
    st = env.wait_exit(ender)
    assert (st.exit_code, st.reason) == (7, "Error")
    assert ("stdout", "bye\n") in env.log_lines(ender)
    assert env.status(writer).state == api_pb2.CONTAINER_RUNNING
    assert env.exec_sync(writer, ["echo", "alive"]).stdout == b"alive\n"
    url = str(env.cri.Attach(api_pb2.AttachRequest(container_id=writer, stdout=True,
                                                   stderr=True)).url)
    ex = SpdyExec(url, stdin=False)
    assert b"\nout" in ex.read_until(b"\nout")
    ex.session.close()
    time.sleep(0.5)
    # the tty's output the dead shim had read but not ended: written then, not lost
    assert env.log_lines(tty) == [] or "no newline yet" in env.log_lines(tty)[0][1]
    raw = env.log_path(tty).read_text()
    assert " P no newline yet" in raw
    log = env.log_path(writer)   # kubelet's rotation: rename, then ReopenContainerLog
    os.rename(log, log.with_name(log.name + ".1"))
    env.cri.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=writer))
    assert pods.wait_until(lambda: log.exists() and log.stat().st_size > 0)
    url = str(env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id,
                                                             port=[8080])).url)
    with SpdyPortForward(url) as pf:
        body, err = pf.request(8080, b"GET /index.html HTTP/1.0\r\n\r\n")
        assert b"200 OK" in body and body.endswith(b"pod-body\n"), (body, err)
    _finish(env, writer, shim_dir, kills=1)


def test_repeated_kill9_of_the_shim_stays_consistent(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    _, env = started
    writer = env.run(["sh", "-c", WRITER])
    shim_dir = _shim_dir(env)
    took = []
    for delay in (0.3, 0.05, 0.2, 0.01, 0.15, 0.1):   # kills at varied points of its work
        time.sleep(delay)
        old = _shim_pid(shim_dir)
        os.kill(old, signal.SIGKILL)
        new, t = _wait_adopted(env, shim_dir, old)
        took.append(t)
        assert env.exec_sync(writer, ["echo", str(new)]).stdout == f"{new}\n".encode()
    print("successor up after (ms):", [round(t * 1000) for t in took])
    assert _pod_state(env) == api_pb2.SANDBOX_READY
    _finish(env, writer, shim_dir, kills=6)


def test_kill9_of_daemon_and_shim_the_restarted_daemon_adopts(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    writer = env.run(["sh", "-c", WRITER])
    ender = env.run(["sh", "-c", "trap 'echo bye; exit 7' TERM; while :; do sleep 0.05; done"])
    created = env.create(env.config(["sleep", "1000"]))
    shim_dir = _shim_dir(env)
    time.sleep(0.5)
    old = _shim_pid(shim_dir)
    ender_pid = env.info(ender)["pid"]
    d.kill9()
    os.kill(old, signal.SIGKILL)
    time.sleep(0.3)
    os.kill(ender_pid, signal.SIGTERM)   # exits while neither daemon nor shim runs
    time.sleep(1.0)                      # the writer blocks on its full pipes meanwhile
    d.start()
    env.cri = d.c
    assert _pod_state(env) == api_pb2.SANDBOX_READY
    new = ShimClient(str(shim_dir)).hello().shim_pid
    assert new != old and new == _shim_pid(shim_dir)
    st = env.wait_exit(ender)
    assert (st.exit_code, st.reason) == (7, "Error")
    assert ("stdout", "bye\n") in env.log_lines(ender)
    assert env.status(writer).state == api_pb2.CONTAINER_RUNNING
    assert env.exec_sync(writer, ["echo", "alive"]).stdout == b"alive\n"
    # a created container's init gave up when its gate closed with the shim (rule: exit 1)
    st = env.wait_exit(created)
    assert (st.exit_code, st.reason) == (1, "Error")
    env.remove(created)
    # and once more, the shim alone, under the restarted daemon
    os.kill(new, signal.SIGKILL)
    _wait_adopted(env, shim_dir, new)
    assert env.exec_sync(writer, ["echo", "again"]).stdout == b"again\n"
    _finish(env, writer, shim_dir, kills=2)


def test_stop_and_remove_right_after_the_shim_died_leave_nothing(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """StopPodSandbox racing the adoption (it takes the pod lock first, or stops the
    successor): no shim, keeper or pause-holder is left, the pod is not adopted afterwards."""
    _, env = started
    env.run(["sh", "-c", WRITER])
    env.run(["sleep", "1000"])
    shim_dir = _shim_dir(env)
    procs = _pod_processes(shim_dir)
    os.kill(_shim_pid(shim_dir), signal.SIGKILL)
    pods.stop_and_remove(env.cri, env.pod_id)
    env.pod_id = ""
    env.created.clear()
    _assert_gone(procs)
    time.sleep(1.0)
    assert _shims_of(shim_dir) == [] and not shim_dir.exists()
