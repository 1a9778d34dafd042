"""One node monitor serves every pod (runtime.shim.monitor), through the real gRPC API:
one process answers every pod's shim.sock; a pod's failed set-up, its stop and the churn of
pods leave the monitor and the other pods as they were (and its fd count level); kill -9
of the daemon keeps the monitor for new pods; kill -9 of the monitor leaves containers
running with their exits recorded, and one successor adopts every pod and serves new ones."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from runtime.shim import adopt, pause, podsetup
from runtime.shim_client import ShimClient
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error
from tests.support.daemon import PycriDaemon

FAIL_HOST = "failme"
FLAKY_HOST = "adoptflaky"   # its first adoption in a monitor fails (adopt.FAULT_ENV)
SLOW_HOST = "slowpause"     # its pause-holder reports after pause.SLOW_PAUSE_S


@pytest.fixture
def started(fresh_daemon: PycriDaemon) -> Iterator[tuple[PycriDaemon, ContainerEnv]]:
    d = fresh_daemon.start(extra_env={podsetup.FAULT_ENV: FAIL_HOST,
                                      adopt.FAULT_ENV: FLAKY_HOST,
                                      pause.SLOW_ENV: SLOW_HOST})
    env = ContainerEnv(d.c)
    try:
        with env:
            yield d, env
            if d.proc is None:
                d.start()
            env.cri = d.c
    finally:  # after a failed test: the pods it left, then a monitor still serving one
        if d.proc is not None and d.proc.poll() is None:
            try:
                pods.remove_all(d.c, [p.id for p in pods.list_pods(d.c)])
            except grpc.RpcError:
                pass
        if pods.shim_pids_of(d.base):
            for pid in pods.monitor_pids_of(d.base):
                os.kill(pid, signal.SIGKILL)


def _monitor(cri: object, pod_id: str) -> int:
    return int(pods.info(cri, pod_id)["shimPid"])  # type: ignore[arg-type]


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _wait(cond: object, what: str, timeout: float = 10.0) -> None:
    assert pods.wait_until(cond, timeout=timeout), what


def _pod_with_container(env: ContainerEnv, cmd: list[str],
                        **cfg: object) -> tuple[str, str, api_pb2.PodSandboxConfig]:
    config = pods.pod_config(**cfg)  # type: ignore[arg-type]
    config.log_directory = str(env.log_dir)
    pod_id = pods.run_pod(env.cri, config)
    cid = env.create(env.config(cmd), pod_id=pod_id, pod_config=config)
    env.start_container(cid)
    return pod_id, cid, config


def _stop_remove(env: ContainerEnv, pod_id: str, cids: list[str]) -> None:
    for cid in cids:
        env.cri.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
        env.created.remove(cid)
    pods.stop_and_remove(env.cri, pod_id)


def test_one_monitor_serves_every_pod_and_churn_leaves_its_fds_level(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    extra = [pods.run_pod(d.c, pods.pod_config(pid=api_pb2.POD)) for _ in range(3)]
    extra.append(pods.run_pod(d.c, pods.pod_config(host_network=True)))
    every = [env.pod_id, *extra]
    monitor = _monitor(d.c, env.pod_id)
    try:
        assert {_monitor(d.c, p) for p in every} == {monitor}
        assert Path(f"/proc/{monitor}/comm").read_text().strip() == "pycri-monitor"
        for p in every:  # every pod's own socket, answered by that one process
            hello = ShimClient(pods.info(d.c, p)["shimDir"]).hello()
            assert (hello.pod_id, hello.shim_pid) == (p, monitor)
        cid = env.run(["sleep", "1000"])
        assert env.exec_sync(cid, ["echo", "hi"]).stdout == b"hi\n"

        def cycle() -> None:
            pod_id, c, _ = _pod_with_container(env, ["sleep", "1000"], pid=api_pb2.POD)
            assert _monitor(d.c, pod_id) == monitor
            assert env.exec_sync(c, ["echo", "x"]).stdout == b"x\n"
            _stop_remove(env, pod_id, [c])

        cycle()  # the first one may open what stays open (caches, the log dir)
        time.sleep(0.2)
        before = _fds(monitor)
        for _ in range(4):
            cycle()
        _wait(lambda: _fds(monitor) <= before,
              f"monitor fds grew over pod cycles: {before} -> {_fds(monitor)}")
        assert _alive(monitor) and env.exec_sync(cid, ["true"]).exit_code == 0
    finally:
        for p in extra:
            pods.stop_and_remove(d.c, p)


def test_failed_pod_set_up_leaves_monitor_and_other_pods_alone(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    cid = env.run(["sleep", "1000"])
    monitor = _monitor(d.c, env.pod_id)
    fds = _fds(monitor)
    children = _children(monitor)  # the pod's pause-holder and the container's keeper
    assert len(children) == 2
    states = d.base / "state"
    for cfg, why in ((pods.pod_config(hostname=FAIL_HOST, pid=api_pb2.POD),  # fails last
                      podsetup.FAULT_ENV),
                     (pods.pod_config(sysctls={"net.ipv4.no_such_knob": "1"}),  # in the pause
                      "no_such_knob")):
        err = rpc_error(pods.run_pod, d.c, cfg)
        assert why in (err.details() or ""), err.details()
        assert _alive(monitor)
        assert env.exec_sync(cid, ["echo", "on"]).stdout == b"on\n"
    ready = api_pb2.PodSandboxFilter(
        state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY))
    assert [p.id for p in pods.list_pods(d.c, ready)] == [env.pod_id]
    # nothing of the failed pods: no pause-holder, pins, sockets, and no fd kept
    assert sorted(os.listdir(states / "ns")) == [env.pod_id]
    assert [p.name for p in (states / "shims").glob("*/shim.sock")] == ["shim.sock"]
    _wait(lambda: _children(monitor) == children, f"children {children} -> {_children(monitor)}")
    _wait(lambda: _fds(monitor) <= fds, f"fds {fds} -> {_fds(monitor)}")
    new = pods.run_pod(d.c)  # and the monitor still takes new pods
    try:
        assert _monitor(d.c, new) == monitor
    finally:
        pods.stop_and_remove(d.c, new)


def test_stopping_one_pod_leaves_the_others_running(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    keep = env.run(["sleep", "1000"])
    keep_pid = env.info(keep)["pid"]
    gone, gone_cid, _ = _pod_with_container(env, ["sleep", "1000"], pid=api_pb2.POD)
    gone_info = pods.info(d.c, gone)
    monitor = _monitor(d.c, env.pod_id)
    assert gone_info["shimPid"] == monitor
    pods.stop(d.c, gone)
    assert not os.path.exists(os.path.join(gone_info["shimDir"], "shim.sock"))
    _wait(lambda: not _alive(gone_info["pid"]), "the stopped pod's pause-holder runs on")
    assert _alive(monitor) and _alive(keep_pid)
    assert pods.status(d.c, env.pod_id).status.state == api_pb2.SANDBOX_READY
    assert env.status(keep).state == api_pb2.CONTAINER_RUNNING
    assert env.exec_sync(keep, ["echo", "still"]).stdout == b"still\n"
    assert env.status(gone_cid).state == api_pb2.CONTAINER_EXITED
    _stop_remove(env, gone, [gone_cid])
    assert ShimClient(pods.info(d.c, env.pod_id)["shimDir"]).hello().shim_pid == monitor


def test_daemon_kill9_keeps_the_monitor_and_new_pods_use_it(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    cid = env.run(["sleep", "1000"])
    pid = env.info(cid)["pid"]
    monitor = _monitor(d.c, env.pod_id)
    d.restart(crash=True)
    env.cri = d.c
    assert _alive(monitor) and _alive(pid)
    assert pods.status(d.c, env.pod_id).status.state == api_pb2.SANDBOX_READY
    assert env.exec_sync(cid, ["echo", "back"]).stdout == b"back\n"
    new, new_cid, _ = _pod_with_container(env, ["sleep", "1000"])
    assert _monitor(d.c, new) == monitor  # the restarted daemon's zygote found it
    assert env.exec_sync(new_cid, ["true"]).exit_code == 0
    _stop_remove(env, new, [new_cid])


def test_monitor_kill9_a_successor_adopts_every_pod_and_serves_new_ones(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """kill -9 of the monitor: its pods' containers run on, an exit meanwhile is recorded,
    one successor monitor takes every pod back (runtime.shim.adopt) and serves new pods too,
    and stopping the old pods leaves nothing of them."""
    d, env = started
    script = "trap 'exit 7' TERM; while :; do sleep 0.05; done"
    cid = env.run(["sh", "-c", script])
    other, other_cid, _ = _pod_with_container(env, ["sleep", "1000"], pid=api_pb2.POD)
    monitor = _monitor(d.c, env.pod_id)
    assert _monitor(d.c, other) == monitor
    pid, other_pid = env.info(cid)["pid"], env.info(other_cid)["pid"]
    pauses = [pods.info(d.c, p)["pid"] for p in (env.pod_id, other)]
    shim_dirs = [Path(pods.info(d.c, p)["shimDir"]) for p in (env.pod_id, other)]
    keepers = [int((sd / "containers" / f"{c}.keeper").read_text())
               for sd, c in zip(shim_dirs, (cid, other_cid), strict=True)]
    os.kill(monitor, signal.SIGKILL)
    os.kill(pid, signal.SIGTERM)  # exits while no monitor serves its pod
    _wait(lambda: not _alive(monitor), "the monitor survived SIGKILL")

    def served_by() -> set[int]:
        got = set()
        for sd in shim_dirs:
            try:
                got.add(ShimClient(str(sd)).hello(timeout=1).shim_pid)
            except Exception:  # noqa: BLE001 - not adopted yet
                got.add(0)
        return got

    _wait(lambda: len(served_by()) == 1 and 0 not in served_by() and monitor not in served_by(),
          "the pods were not adopted by one successor", timeout=30)
    successor = served_by().pop()
    assert all(_alive(p) for p in (other_pid, *pauses, keepers[1]))  # keepers[0]: its exit
    for p in (env.pod_id, other):
        assert pods.status(d.c, p).status.state == api_pb2.SANDBOX_READY
    _wait(lambda: env.status(cid).exit_code == 7, "the keeper's record was not reported")
    assert env.status(cid).state == api_pb2.CONTAINER_EXITED
    assert env.exec_sync(other_cid, ["echo", "adopted"]).stdout == b"adopted\n"
    new, new_cid, _ = _pod_with_container(env, ["sleep", "1000"])
    assert _monitor(d.c, new) == successor
    assert env.exec_sync(new_cid, ["echo", "new"]).stdout == b"new\n"
    _stop_remove(env, other, [other_cid])
    env.cri.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=env.pod_id))
    _wait(lambda: not any(_alive(p) for p in (other_pid, *pauses, *keepers)),
          "the old pods' processes outlived StopPodSandbox")
    assert _alive(successor) and env.exec_sync(new_cid, ["true"]).exit_code == 0
    _stop_remove(env, new, [new_cid])


def _served_by(shim_dir: str) -> int:
    try:
        return ShimClient(shim_dir).hello(timeout=1).shim_pid
    except Exception:  # noqa: BLE001 - not adopted (yet)
        return 0


def test_a_transient_adoption_failure_is_retried_and_leaves_no_ghost(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """The first adoption of the pod fails once everything of it is on the successor's loop
    (a fault point): the daemon tries again, the pod is READY and served, and the failed
    attempt left nothing in the successor (one copy of the container's log and pipes)."""
    d, env = started
    pod_id, cid, _ = _pod_with_container(env, ["sleep", "1000"], hostname=FLAKY_HOST)
    monitor = _monitor(d.c, pod_id)
    shim_dir = pods.info(d.c, pod_id)["shimDir"]
    log_path = str(env.log_path(cid))
    os.kill(monitor, signal.SIGKILL)
    _wait(lambda: _served_by(shim_dir) not in (0, monitor), "the pod was not adopted",
          timeout=30)
    successor = _served_by(shim_dir)
    shim_log = Path(shim_dir, "shim.log").read_text()
    assert adopt.FAULT_ENV in shim_log and f"adopted by monitor {successor}" in shim_log
    assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_READY
    assert "adoptionError" not in pods.info(d.c, pod_id)
    assert env.exec_sync(cid, ["echo", "back"]).stdout == b"back\n"
    links = []
    for fd in os.listdir(f"/proc/{successor}/fd"):
        try:
            links.append(os.readlink(f"/proc/{successor}/fd/{fd}"))
        except OSError:
            pass
    assert links.count(log_path) == 1, links
    _stop_remove(env, pod_id, [cid])


def test_a_pod_whose_pause_holder_died_with_its_monitor_is_notready_and_says_why(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    d, env = started
    pod_id = pods.run_pod(d.c, pods.pod_config())
    try:
        info = pods.info(d.c, pod_id)
        os.kill(info["pid"], signal.SIGKILL)      # the pause-holder
        os.kill(info["shimPid"], signal.SIGKILL)  # and its monitor
        _wait(lambda: pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_NOTREADY,
              "the pod stayed READY without its pause-holder", timeout=30)
        why = pods.info(d.c, pod_id).get("adoptionError", "")
        assert "pause-holder" in why and "kubelet recreates" in why, why
        # the other pod of that monitor was taken back by the successor
        assert pods.status(d.c, env.pod_id).status.state == api_pb2.SANDBOX_READY
    finally:
        pods.stop_and_remove(d.c, pod_id)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _answered_while(cond: threading.Thread, call: object, timeout: float = 10.0) -> object:
    """call() in a thread of its own: its result, asserting it came while `cond` still ran."""
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(call()), daemon=True)  # type: ignore[operator]
    t.start()
    t.join(timeout)
    assert got, f"not answered within {timeout} s while another pod hangs"
    assert cond.is_alive(), "the hung pod's operation finished first: nothing was shown"
    return got[0]


def test_a_pod_whose_stop_hangs_does_not_hold_up_the_other_pods(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """StopPodSandbox of a pod whose pause-holder (PID 1 of the pod's PID namespace) cannot
    finish its exit: a process of that namespace has a parent outside it (an nsenter,
    SIGSTOPped) that does not reap it. The monitor waits for that pause-holder on its loop:
    another pod's ExecSync is answered meanwhile, and the stop ends once it has exited."""
    d, env = started
    cid = env.run(["sleep", "1000"])
    hung = pods.run_pod(d.c, pods.pod_config(pid=api_pb2.POD))
    pause = int(pods.info(d.c, hung)["pid"])
    holder = subprocess.Popen(["nsenter", "-t", str(pause), "-p", "--", "sleep", "1000"])
    stopping = threading.Thread(target=pods.stop, args=(d.c, hung), daemon=True)
    try:
        _wait(lambda: _children(holder.pid), "nsenter did not fork into the pod")
        inside = _children(holder.pid).pop()
        os.kill(holder.pid, signal.SIGSTOP)
        stopping.start()
        _wait(lambda: _state(inside) == "Z", "the stop did not SIGKILL the pod's processes")
        time.sleep(0.2)   # the monitor waits for the pause-holder now
        res = _answered_while(stopping, lambda: env.exec_sync(cid, ["echo", "served"]))
        assert res.stdout == b"served\n"  # type: ignore[attr-defined]
        assert _alive(pause)
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(timeout=10)
        if stopping.is_alive() or stopping.ident is not None:
            stopping.join(timeout=60)
    _wait(lambda: not _alive(pause), "the pause-holder outlived the stop")
    assert pods.status(d.c, hung).status.state == api_pb2.SANDBOX_NOTREADY
    pods.stop_and_remove(d.c, hung)


def test_a_pod_whose_set_up_hangs_does_not_hold_up_the_other_pods(
        started: tuple[PycriDaemon, ContainerEnv]) -> None:
    """RunPodSandbox of a pod whose pause-holder takes its time to report (a fault point:
    pause.SLOW_PAUSE_S): the monitor reads that report on its loop, so another pod's
    ExecSync is answered meanwhile, and the slow pod is READY once it reported."""
    d, env = started
    cid = env.run(["sleep", "1000"])
    monitor = _monitor(d.c, env.pod_id)
    children = len(_children(monitor))
    made: list[str] = []
    starting = threading.Thread(
        target=lambda: made.append(pods.run_pod(d.c, pods.pod_config(hostname=SLOW_HOST))),
        daemon=True)
    starting.start()
    try:
        _wait(lambda: len(_children(monitor)) > children, "the slow pause-holder was not forked")
        res = _answered_while(starting, lambda: env.exec_sync(cid, ["echo", "served"]),
                              timeout=pause.SLOW_PAUSE_S / 2)
        assert res.stdout == b"served\n"  # type: ignore[attr-defined]
    finally:
        starting.join(timeout=60)
    assert made, "RunPodSandbox of the slow pod failed"
    try:
        assert pods.status(d.c, made[0]).status.state == api_pb2.SANDBOX_READY
        assert _monitor(d.c, made[0]) == monitor
    finally:
        pods.stop_and_remove(d.c, made[0])
