"""Container lifecycle through the real gRPC API: create/start/stop/remove, states, exit codes,
command/env/workdir merging, status fields, list filters, logs, kubelet retries."""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import CriClient, rpc_error


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        yield e


def _state(env: ContainerEnv, cid: str) -> int:
    return env.status(cid).state


def _runs(pid: int, marker: bytes) -> bool:
    """pid is alive and its command line contains marker."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _logged(env: ContainerEnv, cid: str, *records: tuple[str, str]) -> bool:
    """Every (stream, text) record is in the container's CRI log."""
    lines = env.log_lines(cid)
    return all(r in lines for r in records)


def test_create_start_stop_remove(env: ContainerEnv) -> None:
    # PID 1 of a pid namespace only gets signals it handles: the trap makes TERM count
    cfg = env.config(["sh", "-c", "trap 'exit 5' TERM; while true; do sleep 0.1; done"],
                     labels={"app": "a"}, annotations={"note": "n"})
    before = time.time_ns()
    cid = env.create(cfg)
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid)
    st = env.status(cid)
    assert st.state == api_pb2.CONTAINER_CREATED
    assert before <= st.created_at <= time.time_ns()
    assert st.started_at == 0 and st.finished_at == 0
    env.start_container(cid)
    st = env.status(cid)
    assert st.state == api_pb2.CONTAINER_RUNNING and st.started_at >= st.created_at
    assert st.metadata.name == cfg.metadata.name
    assert dict(st.labels) == {"app": "a"} and dict(st.annotations) == {"note": "n"}
    assert st.image.image == env.busybox
    assert st.image_id == env.image_ids["busybox"]
    assert st.image_ref.startswith(env.busybox.rsplit(":", 1)[0] + "@sha256:")
    # consistent with the ImageService
    img = env.cri.ImageStatus(api_pb2.ImageStatusRequest(
        image=api_pb2.ImageSpec(image=env.busybox))).image
    assert img.id == st.image_id and st.image_ref in img.repo_digests
    assert st.log_path == str(env.log_dir / cfg.log_path)
    # starting twice is refused
    err = rpc_error(env.start_container, cid)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    t0 = time.monotonic()
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=5))
    assert time.monotonic() - t0 < 4   # SIGTERM ends it before the timeout
    st = env.status(cid)
    assert st.state == api_pb2.CONTAINER_EXITED
    assert st.exit_code == 5 and st.reason == "Error" and st.finished_at >= st.started_at
    # stop is idempotent and works on an exited container
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=5))
    env.remove(cid)
    assert rpc_error(env.status, cid).code() == grpc.StatusCode.NOT_FOUND
    env.cri.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))  # idempotent
    assert not (Path(env.cri.socket_path).parent / "root" / "containers" / cid).exists()
    assert (env.log_dir / cfg.log_path).exists()  # the log stays: kubelet owns it


def test_exit_codes_and_reasons(env: ContainerEnv) -> None:
    ok = env.run(["true"])
    bad = env.run(["sh", "-c", "exit 7"])
    assert (env.wait_exit(ok).exit_code, env.status(ok).reason) == (0, "Completed")
    st = env.wait_exit(bad)
    assert (st.exit_code, st.reason) == (7, "Error")
    for cid in (ok, bad):
        env.remove(cid)


def test_remove_running_container_kills_it(env: ContainerEnv) -> None:
    cid = env.run(["sleep", "1000"])
    pid = env.info(cid)["pid"]
    assert Path(f"/proc/{pid}").exists()
    env.remove(cid)
    assert pods.wait_until(lambda: not _runs(pid, b"sleep"), timeout=5)


def test_stop_created_container_and_stop_signal_timeout(env: ContainerEnv) -> None:
    created = env.create(env.config(["sleep", "1000"]))
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=created, timeout=1))
    assert env.status(created).state == api_pb2.CONTAINER_EXITED
    # PID 1 of its pid namespace ignores SIGTERM: the timeout then SIGKILL apply
    stubborn = env.run(["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"])
    assert pods.wait_until(lambda: _logged(env, stubborn, ("stdout", "ready\n")))
    t0 = time.monotonic()
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=stubborn, timeout=1))
    elapsed = time.monotonic() - t0
    assert 0.9 < elapsed < 5, elapsed
    assert env.status(stubborn).exit_code == 137
    for cid in (created, stubborn):
        env.remove(cid)


def test_image_stop_signal_and_cri_stop_signal(env: ContainerEnv) -> None:
    # the merge image's StopSignal is SIGUSR1: the trap proves which signal arrived
    script = "trap 'echo got-usr1; exit 3' USR1; trap 'echo got-int; exit 4' INT; " \
             "echo ready; while true; do sleep 0.1; done"
    a = env.run(["sh", "-c", script], image=env.merge)
    b = env.run(["sh", "-c", script], image=env.merge, stop_signal=api_pb2.SIGINT)
    assert pods.wait_until(lambda: all(_logged(env, cid, ("stdout", "ready\n")) for cid in (a, b)))
    for cid in (a, b):
        env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=10))
    assert env.status(a).exit_code == 3 and env.status(b).exit_code == 4
    assert env.status(b).stop_signal == api_pb2.SIGINT
    for cid in (a, b):
        env.remove(cid)


def test_command_args_env_workdir_merging(env: ContainerEnv) -> None:
    # image only: ENTRYPOINT + CMD
    assert env.output(None, image=env.merge) == "ep c1 c2\n"
    # args replace CMD, keep ENTRYPOINT
    assert env.output(None, image=env.merge, args=["a1"]) == "ep a1\n"
    # command replaces ENTRYPOINT and drops CMD
    assert env.output(["/bin/echo", "x"], image=env.merge) == "x\n"
    assert env.output(["/bin/echo"], image=env.merge, args=["y", "z"]) == "y z\n"
    out = env.output(["sh", "-c", "echo $IMG $OVR $NEW $HOSTNAME; pwd"], image=env.merge,
                     envs=[api_pb2.KeyValue(key="OVR", value=b"cfg"),
                           api_pb2.KeyValue(key="NEW", value=b"v")])
    assert out == "img cfg v ctr-test-pod\n/work/dir\n"   # WorkingDir created if missing
    assert env.output(["pwd"], image=env.merge, working_dir="/tmp/w2") == "/tmp/w2\n"
    # image VOLUME: an empty writable directory
    assert env.output(["sh", "-c", "ls -A /vol; touch /vol/f && echo ok"],
                      image=env.merge) == "ok\n"


def test_pod_files_and_hostname(env: ContainerEnv) -> None:
    out = env.output(["sh", "-c", "hostname; cat /etc/hostname; grep -c . /etc/resolv.conf"])
    lines = out.splitlines()
    assert lines[0] == "ctr-test-pod" and lines[1] == "ctr-test-pod" and int(lines[2]) >= 1


def test_bad_requests(env: ContainerEnv) -> None:
    def create_err(cfg: api_pb2.ContainerConfig, pod: str | None = None) -> grpc.StatusCode:
        return rpc_error(env.create, cfg, pod).code()

    assert create_err(env.config(["true"]), pod="f" * 64) == grpc.StatusCode.NOT_FOUND
    assert create_err(env.config(["true"], image="127.0.0.1:1/nope:v1")) == \
        grpc.StatusCode.NOT_FOUND
    no_name = env.config(["true"])
    no_name.metadata.name = ""
    assert create_err(no_name) == grpc.StatusCode.INVALID_ARGUMENT
    assert create_err(env.config(["true"], working_dir="/proc/self/fd/3")) == \
        grpc.StatusCode.INVALID_ARGUMENT
    missing = env.config(["true"], mounts=[api_pb2.Mount(container_path="/m",
                                                         host_path="/nonexistent/pycri")])
    err = rpc_error(env.create, missing)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "/nonexistent/pycri" in err.details()
    # an entrypoint that does not exist: found out before the container runs
    err = rpc_error(env.create, env.config(["/no/such/binary"]))
    assert "/no/such/binary" in err.details()
    assert err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    # values no kernel call can take: a clear INVALID_ARGUMENT, not an INTERNAL crash
    assert create_err(env.config(["true"], stop_signal=99)) == grpc.StatusCode.INVALID_ARGUMENT
    assert create_err(env.config(["echo", "a\0b"])) == grpc.StatusCode.INVALID_ARGUMENT
    for op in ("StartContainer", "ContainerStatus", "ReopenContainerLog"):
        req = getattr(api_pb2, op + "Request")(container_id="0" * 64)
        assert rpc_error(getattr(env.cri, op), req).code() == grpc.StatusCode.NOT_FOUND, op


def test_name_reservation_and_kubelet_retry(env: ContainerEnv) -> None:
    cfg = env.config(["sleep", "1000"], name="retry")
    results: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(env.create(cfg))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1      # concurrent retries: one container
    assert env.create(cfg) == results[0]               # a retry after it finished: same one
    other = env.config(["sleep", "5"], name="retry")   # same name, different request
    assert rpc_error(env.create, other).code() == grpc.StatusCode.ALREADY_EXISTS
    env.remove(results[0])
    cid = env.create(other)                            # the name is free again
    env.remove(cid)


def test_list_and_filters(env: ContainerEnv) -> None:
    a = env.run(["sleep", "1000"], labels={"tier": "a", "x": "1"})
    b = env.create(env.config(["sleep", "1000"], labels={"tier": "b"}))

    def ids(flt: api_pb2.ContainerFilter | None = None) -> set[str]:
        return {c.id for c in env.cri.ListContainers(
            api_pb2.ListContainersRequest(filter=flt)).containers}

    assert {a, b} <= ids()
    assert ids(api_pb2.ContainerFilter(id=a)) == {a}
    assert ids(api_pb2.ContainerFilter(id=a[:12])) == {a}
    assert {a, b} <= ids(api_pb2.ContainerFilter(pod_sandbox_id=env.pod_id))
    assert ids(api_pb2.ContainerFilter(pod_sandbox_id="f" * 64)) == set()
    running = ids(api_pb2.ContainerFilter(
        state=api_pb2.ContainerStateValue(state=api_pb2.CONTAINER_RUNNING)))
    assert a in running and b not in running
    assert ids(api_pb2.ContainerFilter(label_selector={"tier": "a"})) == {a}
    assert ids(api_pb2.ContainerFilter(label_selector={"tier": "a", "x": "2"})) == set()
    listed = next(c for c in env.cri.ListContainers(api_pb2.ListContainersRequest()).containers
                  if c.id == a)
    assert listed.pod_sandbox_id == env.pod_id and listed.image_id == env.image_ids["busybox"]
    assert listed.state == api_pb2.CONTAINER_RUNNING and dict(listed.labels)["tier"] == "a"
    streamed = {c.id for r in env.cri.runtime.StreamContainers(
        api_pb2.StreamContainersRequest(filter=api_pb2.ContainerFilter(id=b)))
        for c in r.containers}
    assert streamed == {b}
    # by a unique prefix, status works too (crictl style)
    assert env.status(a[:12]).id == a
    for cid in (a, b):
        env.remove(cid)


def test_status_verbose_user_mounts_resources(env: ContainerEnv, tmp_path: Path) -> None:
    res = api_pb2.LinuxContainerResources(cpu_shares=256, memory_limit_in_bytes=64 << 20)
    cid = env.run(["sleep", "1000"], image=env.wwwdata,
                  mounts=[api_pb2.Mount(container_path="/data", host_path=str(tmp_path),
                                        readonly=True)],
                  linux=api_pb2.LinuxContainerConfig(resources=res))
    resp = env.cri.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid,
                                                                  verbose=True))
    st = resp.status
    assert st.user.linux.uid == 33 and st.user.linux.gid == 33
    assert [(m.container_path, m.host_path, m.readonly) for m in st.mounts] == \
        [("/data", str(tmp_path), True)]
    assert st.resources.linux.cpu_shares == 256
    assert st.resources.linux.memory_limit_in_bytes == 64 << 20
    info = env.info(cid)
    assert info["sandboxID"] == env.pod_id and info["pid"] > 0
    assert Path(f"/proc/{info['pid']}").exists()
    env.remove(cid)


def test_cri_logs_and_reopen(env: ContainerEnv) -> None:
    long_line = "x" * 20000
    script = (f"echo out; echo err >&2; printf '{long_line}\\n'; sleep 0.2; "
              "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.05; done")
    cid = env.run(["sh", "-c", script])
    path = env.log_path(cid)
    assert pods.wait_until(lambda: _logged(env, cid, ("stdout", "out\n"), ("stderr", "err\n"),
                                           ("stdout", long_line + "\n")))
    lines = env.log_lines(cid)
    assert ("stdout", "out\n") in lines and ("stderr", "err\n") in lines
    assert ("stdout", long_line + "\n") in lines
    now = datetime.now(UTC)
    for line in path.read_bytes().splitlines():   # RFC3339Nano, UTC, recent
        stamp = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?Z",
                             line.split(b" ", 1)[0].decode())
        assert stamp, line
        when = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        assert abs((now - when).total_seconds()) < 60
    rotated = path.with_name("0.log.1")
    os.rename(path, rotated)
    env.cri.ReopenContainerLog(api_pb2.ReopenContainerLogRequest(container_id=cid))
    assert pods.wait_until(lambda: path.exists() and any(t.startswith("tick")
                                                         for _, t in env.log_lines(cid)))
    assert path.exists() and any(t.startswith("tick") for _, t in env.log_lines(cid))
    env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=2))
    err = rpc_error(env.cri.ReopenContainerLog,
                    api_pb2.ReopenContainerLogRequest(container_id=cid))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    env.remove(cid)
    rotated.unlink()


def test_only_stdio_fds_inside(env: ContainerEnv) -> None:
    out = env.output(["sh", "-c", "ls /proc/$$/fd; true"])  # "; true": sh must not exec ls
    assert sorted(out.split()) == ["0", "1", "2"]


def test_container_in_stopped_pod_and_pod_removal(daemon) -> None:  # type: ignore[no-untyped-def]
    cri: CriClient = daemon.c
    with ContainerEnv(cri) as env:
        cid = env.run(["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])
        other = env.create(env.config(["sleep", "1000"]))
        pid = env.info(cid)["pid"]
        pods.stop(cri, env.pod_id)
        assert env.status(cid).state == api_pb2.CONTAINER_EXITED
        assert env.status(other).state == api_pb2.CONTAINER_EXITED
        assert not Path(f"/proc/{pid}/cmdline").exists() or \
            b"trap" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        err = rpc_error(env.create, env.config(["true"]))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        pods.remove(cri, env.pod_id)
        env.pod_id = ""
        assert rpc_error(env.status, cid).code() == grpc.StatusCode.NOT_FOUND
        env.created.clear()


def test_image_in_use_cannot_be_removed(env: ContainerEnv) -> None:
    cid = env.create(env.config(["true"], image=env.wwwdata))
    err = rpc_error(env.cri.RemoveImage, api_pb2.RemoveImageRequest(
        image=api_pb2.ImageSpec(image=env.wwwdata)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    env.remove(cid)


def test_signal_sent_by_kill_is_reported(env: ContainerEnv) -> None:
    cid = env.run(["sleep", "1000"])
    os.kill(env.info(cid)["pid"], signal.SIGKILL)
    st = env.wait_exit(cid)
    assert st.exit_code == 137 and st.reason == "Error"
    env.remove(cid)


def test_lists_follow_every_change_at_once(daemon) -> None:  # type: ignore[no-untyped-def]
    """ListContainers and ListPodSandbox answer from memory (issue #18), yet show a
    container's own exit, a stop and a dead shim on the next call, without any status call
    (nor a timer) in between, and their filters select by the new state."""
    import json

    cri: CriClient = daemon.c

    def listed(**flt: object) -> dict[str, api_pb2.Container]:
        return {c.id: c for c in cri.ListContainers(api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(**flt))).containers}  # type: ignore[arg-type]

    def in_state(state: int) -> api_pb2.ContainerStateValue:
        return api_pb2.ContainerStateValue(state=state)  # type: ignore[arg-type]

    with ContainerEnv(cri) as env:
        quits = env.run(["sh", "-c", "sleep 0.5; exit 4"], labels={"t": "quits"})
        stops = env.run(["sleep", "1000"], labels={"t": "stops"})
        assert listed(label_selector={"t": "quits"})[quits].state == api_pb2.CONTAINER_RUNNING
        started = time.monotonic()
        while listed(id=quits)[quits].state == api_pb2.CONTAINER_RUNNING:
            assert time.monotonic() - started < 10, "the exit never reached ListContainers"
            time.sleep(0.02)
        assert listed(id=quits)[quits].state == api_pb2.CONTAINER_EXITED
        assert set(listed(label_selector={"t": "quits"},
                          state=in_state(api_pb2.CONTAINER_EXITED))) == {quits}
        assert listed(label_selector={"t": "quits"},
                      state=in_state(api_pb2.CONTAINER_RUNNING)) == {}
        st = env.status(quits)
        assert (st.state, st.exit_code, st.reason) == (api_pb2.CONTAINER_EXITED, 4, "Error")

        cri.StopContainer(api_pb2.StopContainerRequest(container_id=stops, timeout=0))
        assert listed(label_selector={"t": "stops"},
                      state=in_state(api_pb2.CONTAINER_RUNNING)) == {}
        assert set(listed(label_selector={"t": "stops"},
                          state=in_state(api_pb2.CONTAINER_EXITED))) == {stops}

        def pods_listed(**flt: object) -> dict[str, api_pb2.PodSandbox]:
            return {p.id: p for p in cri.ListPodSandbox(api_pb2.ListPodSandboxRequest(
                filter=api_pb2.PodSandboxFilter(**flt))).items}  # type: ignore[arg-type]

        ready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
        assert set(pods_listed(id=env.pod_id, state=ready)) == {env.pod_id}
        running = env.run(["sleep", "1000"], labels={"t": "orphaned"})
        info = json.loads(cri.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(
            pod_sandbox_id=env.pod_id, verbose=True)).info["info"])
        # the pause-holder first, then the shim: no successor can take the pod back
        # (runtime.shim.adopt), so the pod turns NOTREADY
        os.kill(info["pid"], signal.SIGKILL)
        os.kill(info["shimPid"], signal.SIGKILL)
        started = time.monotonic()
        while pods_listed(id=env.pod_id)[env.pod_id].state == api_pb2.SANDBOX_READY:
            assert time.monotonic() - started < 5, "the dead shim never reached ListPodSandbox"
            time.sleep(0.01)
        assert pods_listed(id=env.pod_id, state=ready) == {}
        # it runs on under its keeper (runtime/keeper), which records its end: the next List
        # shows that, with the real exit code
        assert listed(id=running)[running].state == api_pb2.CONTAINER_RUNNING
        os.kill(env.info(running)["pid"], signal.SIGKILL)
        started = time.monotonic()
        while listed(id=running)[running].state != api_pb2.CONTAINER_EXITED:
            assert time.monotonic() - started < 5, "the recorded exit never reached the List"
            time.sleep(0.01)
        assert env.status(running).exit_code == 137
