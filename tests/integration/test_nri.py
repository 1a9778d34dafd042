"""NRI through the real daemon: a Python test plugin (tests/support/nri_plugin.py) on the
daemon's NRI socket watches and adjusts real pods and containers made through the CRI."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from nri.ttrpc import Code, RpcError, Status
from proto import api_pb2
from proto import nri_api_pb2 as nri
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error
from tests.support.daemon import REPO_ROOT, PycriDaemon
from tests.support.nri_plugin import NriTestPlugin

MiB = 1 << 20


def _memory_limit(env: ContainerEnv, cid: str) -> int:
    out = env.exec_sync(cid, ["sh", "-c", ("cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                              "cat /sys/fs/cgroup/memory/memory.limit_in_bytes")]).stdout
    return int(out.decode().split()[0])


def test_socket_is_private_and_plugin_is_configured_and_synchronized(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env
    st = os.stat(daemon.nri_socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    cid = env.run(["sleep", "1000"])
    with NriTestPlugin(daemon.nri_socket, name="sync") as plugin:
        cfg = plugin.configured
        assert cfg is not None
        assert (cfg.runtime_name, cfg.registration_timeout, cfg.request_timeout) == \
            ("pycri", 5000, 2000)
        sync = plugin.synchronized
        assert sync is not None
        assert env.pod_id in [p.id for p in sync.pods]
        [ctr] = [c for c in sync.containers if c.id == cid]
        assert ctr.pod_sandbox_id == env.pod_id and ctr.state == nri.CONTAINER_RUNNING
        assert ctr.args == ["sleep", "1000"] and ctr.pid > 0
    env.remove(cid)


def test_pod_events_in_order_with_their_payload(daemon: PycriDaemon) -> None:
    with NriTestPlugin(daemon.nri_socket, name="pods") as plugin:
        cfg = pods.pod_config(labels={"app": "nri"}, annotations={"a": "b"})
        pod_id = pods.run_pod(daemon.c, cfg)
        pods.stop(daemon.c, pod_id)
        pods.stop(daemon.c, pod_id)  # idempotent: plugins hear of it once
        pods.remove(daemon.c, pod_id)
        plugin.wait_for(lambda: "RemovePodSandbox" in plugin.seen(pod_id=pod_id))
        assert plugin.seen(pod_id=pod_id) == ["RunPodSandbox", "StopPodSandbox",
                                              "RemovePodSandbox"]
        pod = plugin.request("RunPodSandbox", pod_id=pod_id).pod
        meta = cfg.metadata
        assert (pod.name, pod.namespace, pod.uid) == (meta.name, meta.namespace, meta.uid)
        assert dict(pod.labels) == {"app": "nri"} and dict(pod.annotations) == {"a": "b"}
        assert pod.ips and pod.linux.cgroups_path


def test_adjustments_reach_the_running_container(daemon: PycriDaemon,
                                                 container_env: ContainerEnv) -> None:
    env = container_env
    host_dir = Path(tempfile.mkdtemp(prefix="pycri-nri-mount-"))
    (host_dir / "file").write_text("from the plugin\n")

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        adj = nri.ContainerAdjustment(
            annotations={"nri.test/adjusted": "yes"},
            env=[nri.KeyValue(key="NRI_VAR", value="set-by-plugin"),
                 nri.KeyValue(key="-DROP_ME")],
            mounts=[nri.Mount(destination="/nri-mnt", type="bind", source=str(host_dir),
                              options=["rbind", "ro"])])
        adj.linux.resources.memory.limit.value = 96 * MiB
        return nri.CreateContainerResponse(adjust=adj)

    try:
        with NriTestPlugin(daemon.nri_socket, name="adjust",
                        handlers={"CreateContainer": create}) as plugin:
            cid = env.run(["sleep", "1000"], envs=[api_pb2.KeyValue(key="DROP_ME", value=b"x")])
            out = env.exec_sync(cid, ["sh", "-c", ("echo $NRI_VAR; echo ${DROP_ME:-gone}; "
                                      "cat /nri-mnt/file; touch /nri-mnt/x || echo ro")])
            assert out.stdout.decode().split("\n")[:4] == [
                "set-by-plugin", "gone", "from the plugin", "ro"], out
            assert _memory_limit(env, cid) == 96 * MiB
            st = env.status(cid)
            assert st.annotations["nri.test/adjusted"] == "yes"
            assert st.resources.linux.memory_limit_in_bytes == 96 * MiB
            seen = plugin.request("CreateContainer", container_id=cid).container
            assert seen.args == ["sleep", "1000"] and "DROP_ME=x" in seen.env
            env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
            env.remove(cid)
            plugin.wait_for(lambda: "RemoveContainer" in plugin.seen(container_id=cid))
            assert plugin.seen(container_id=cid) == [
                "CreateContainer", "PostCreateContainer", "StartContainer", "PostStartContainer",
                "StopContainer", "RemoveContainer"]
    finally:
        shutil.rmtree(host_dir)


def test_failing_create_hook_fails_the_create_leaks_nothing_and_a_retry_works(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env
    fail = [True]

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        if fail[0]:
            raise RpcError(Status(Code.PERMISSION_DENIED, "policy says no"))
        return nri.CreateContainerResponse()

    with NriTestPlugin(daemon.nri_socket, name="deny", handlers={"CreateContainer": create}):
        cfg = env.config(["sleep", "1000"], name="nri-denied")
        err = rpc_error(env.create, cfg)
        assert "policy says no" in (err.details() or "") and "deny" in (err.details() or "")
        listed = env.cri.ListContainers(api_pb2.ListContainersRequest()).containers
        assert "nri-denied" not in [c.metadata.name for c in listed]
        assert not [p for p in (daemon.root / "containers").iterdir()
                    if p.name not in {c.id for c in listed}]
        fail[0] = False
        cid = env.create(cfg)
        env.remove(cid)


def test_failing_run_pod_hook_fails_run_pod_sandbox_then_a_retry_works(
        daemon: PycriDaemon) -> None:
    fail = [True]

    def run(req: nri.RunPodSandboxRequest) -> nri.RunPodSandboxResponse:
        if fail[0]:
            raise RpcError(Status(Code.UNKNOWN, "not today"))
        return nri.RunPodSandboxResponse()

    cfg = pods.pod_config()
    with NriTestPlugin(daemon.nri_socket, name="norun", handlers={"RunPodSandbox": run}):
        err = rpc_error(pods.run_pod, daemon.c, cfg)
        assert "not today" in (err.details() or "")
        assert cfg.metadata.name not in [p.metadata.name for p in pods.list_pods(daemon.c)]
        fail[0] = False
        pod_id = pods.run_pod(daemon.c, cfg)
        pods.stop_and_remove(daemon.c, pod_id)


def test_two_plugins_are_called_in_index_order_and_a_conflict_names_both(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env
    order: list[str] = []

    def setter(name: str, var: str) -> Any:
        def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
            order.append(name)
            return nri.CreateContainerResponse(adjust=nri.ContainerAdjustment(
                env=[nri.KeyValue(key=var, value=name)]))
        return create

    with NriTestPlugin(daemon.nri_socket, name="late", index="90",
                    handlers={"CreateContainer": setter("late", "SHARED")}) as late, \
            NriTestPlugin(daemon.nri_socket, name="early", index="05",
                       handlers={"CreateContainer": setter("early", "SHARED")}):
        err = rpc_error(env.create, env.config(["true"], name="nri-conflict"))
        assert order == ["early", "late"]
        text = err.details() or ""
        assert "05-early" in text and "90-late" in text and "SHARED" in text
        late.handlers["CreateContainer"] = setter("late", "OTHER")
        out = env.output(["sh", "-c", "echo $SHARED $OTHER"], name="nri-both")
        assert out.strip() == "early late"


def test_unsolicited_update_changes_the_live_cgroup(daemon: PycriDaemon,
                                                     container_env: ContainerEnv) -> None:
    env = container_env
    cid = env.run(["sleep", "1000"])
    with NriTestPlugin(daemon.nri_socket, name="updater") as plugin:
        upd = nri.ContainerUpdate(container_id=cid)
        upd.linux.resources.memory.limit.value = 80 * MiB
        assert list(plugin.update_containers([upd]).failed) == []
        assert _memory_limit(env, cid) == 80 * MiB
        bad = nri.ContainerUpdate(container_id="0" * 64)
        bad.linux.resources.memory.limit.value = 80 * MiB
        assert [u.container_id for u in plugin.update_containers([bad]).failed] == ["0" * 64]
    env.remove(cid)


def test_a_plugin_that_hangs_is_dropped_after_the_request_timeout(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env

    def hang(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        time.sleep(6)
        return nri.CreateContainerResponse()

    with NriTestPlugin(daemon.nri_socket, name="slow", index="01",
                    handlers={"CreateContainer": hang}) as slow, \
            NriTestPlugin(daemon.nri_socket, name="fine", index="02") as fine:
        t0 = time.monotonic()
        cid = env.create(env.config(["true"]))
        took = time.monotonic() - t0
        assert 1.9 < took < 5, took  # nri.plugin_request_timeout is 2 s
        assert "CreateContainer" in fine.seen(container_id=cid)
        assert slow.endpoint is not None and slow.endpoint.wait_closed(5)
        env.remove(cid)
        assert "RemoveContainer" in fine.seen(container_id=cid)


def test_a_plugin_killed_mid_call_only_loses_its_connection(
        daemon: PycriDaemon, container_env: ContainerEnv, tmp_path: Path) -> None:
    env = container_env
    mark = tmp_path / "in-hook"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.nri_plugin", str(daemon.nri_socket), "victim",
         "03", "CreateContainer", str(mark)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"synchronized\n"
        with NriTestPlugin(daemon.nri_socket, name="witness", index="04") as witness:
            import threading
            result: dict[str, Any] = {}

            def create() -> None:
                t0 = time.monotonic()
                result["cid"] = env.create(env.config(["sleep", "1000"]))
                result["took"] = time.monotonic() - t0

            t = threading.Thread(target=create)
            t.start()
            deadline = time.monotonic() + 10
            while not mark.exists():
                assert time.monotonic() < deadline, "the victim never got CreateContainer"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            t.join(10)
            assert not t.is_alive()
            assert result["took"] < 1.9, result  # the dead plugin's EOF ends the call at once
            cid = result["cid"]
            assert "CreateContainer" in witness.seen(container_id=cid)
            env.start_container(cid)
            assert env.exec_sync(cid, ["true"]).exit_code == 0
            env.remove(cid)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x02\xff\xff\xff\xff",                          # oversized mux frame
    struct.pack(">II", 2, 14) + struct.pack(">IIBB", 4, 1, 1, 0) + b"\xff\xff\xff\xff",
    b"GET / HTTP/1.1\r\n\r\n" * 3,
])
def test_garbage_on_the_socket_only_loses_that_connection(
        daemon: PycriDaemon, container_env: ContainerEnv, garbage: bytes) -> None:
    with NriTestPlugin(daemon.nri_socket, name="bystander") as bystander:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(daemon.nri_socket))
        s.sendall(garbage)
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):  # the daemon answers what it can, then hangs up
            pass
        s.close()
        out = container_env.output(["echo", "still fine"])
        assert out == "still fine\n"
        assert len([m for m in bystander.seen() if m == "CreateContainer"]) == 1


def test_a_plugin_that_never_registers_is_dropped(daemon: PycriDaemon) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(daemon.nri_socket))
    t0 = time.monotonic()
    assert s.recv(4096) == b""  # closed by the daemon after plugin_registration_timeout
    assert 4.5 < time.monotonic() - t0 < 9
    s.close()


def test_socket_removed_on_shutdown_and_disabled_nri_has_none(
        fresh_daemon: PycriDaemon) -> None:
    d = fresh_daemon
    d.start()
    assert d.nri_socket.exists()
    assert d.stop() == 0
    assert not d.nri_socket.exists()
    off = PycriDaemon(config={"nri": {"enable": False}})
    try:
        off.start()
        assert not off.nri_socket.exists()
        err = None
        try:
            pods.list_pods(off.c)
        except grpc.RpcError as e:
            err = e
        assert err is None
    finally:
        off.stop()
        off.cleanup_dirs()


def test_update_container_resources_goes_through_plugins(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env
    cid = env.run(["sleep", "1000"])

    def update(req: nri.UpdateContainerRequest) -> nri.UpdateContainerResponse:
        assert req.linux_resources.memory.limit.value == 100 * MiB
        u = nri.ContainerUpdate(container_id=req.container.id)
        u.linux.resources.memory.limit.value = 72 * MiB  # the plugin knows better
        return nri.UpdateContainerResponse(update=[u])

    with NriTestPlugin(daemon.nri_socket, name="resizer",
                       handlers={"UpdateContainer": update}) as plugin:
        env.cri.UpdateContainerResources(api_pb2.UpdateContainerResourcesRequest(
            container_id=cid, linux=api_pb2.LinuxContainerResources(
                memory_limit_in_bytes=100 * MiB)))
        assert _memory_limit(env, cid) == 72 * MiB
        assert env.status(cid).resources.linux.memory_limit_in_bytes == 72 * MiB
        assert plugin.seen(container_id=cid) == ["UpdateContainer", "PostUpdateContainer"]
        env.cri.UpdatePodSandboxResources(api_pb2.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=env.pod_id, resources=api_pb2.LinuxContainerResources(
                cpu_shares=512)))
        assert plugin.seen(pod_id=env.pod_id)[-2:] == ["UpdatePodSandbox",
                                                       "PostUpdatePodSandbox"]
        req = plugin.request("UpdatePodSandbox", pod_id=env.pod_id)
        assert req.linux_resources.cpu.shares.value == 512
    env.remove(cid)


PREINSTALLED = '''#!{python}
import json, os, socket
from proto import nri_api_pb2 as nri
from tests.support.nri_plugin import NriTestPlugin

out = open({out!r}, "a", buffering=1)

def run(req):
    out.write(json.dumps({{"event": "RunPodSandbox", "pod": req.pod.id}}) + "\\n")
    return nri.RunPodSandboxResponse()

sock = socket.socket(fileno=int(os.environ["NRI_PLUGIN_SOCKET"]))
plugin = NriTestPlugin("", name="ignored", index="99", handlers={{"RunPodSandbox": run}})
plugin.connect(sock=sock)
out.write(json.dumps({{"config": plugin.configured.config, "name": os.environ["NRI_PLUGIN_NAME"],
                      "index": os.environ["NRI_PLUGIN_IDX"]}}) + "\\n")
plugin.endpoint.wait_closed()
'''


def test_a_preinstalled_plugin_is_started_configured_and_stopped(
        fresh_daemon: PycriDaemon) -> None:
    import json
    d = fresh_daemon
    out = d.base / "preinstalled.jsonl"
    d.nri_plugin_dir.mkdir()
    d.nri_config_dir.mkdir()
    script = d.nri_plugin_dir / "42-recorder"
    script.write_text(PREINSTALLED.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    (d.nri_plugin_dir / "not-a-plugin").write_text("ignored: no NN- prefix\n")
    (d.nri_config_dir / "42-recorder.conf").write_text("threshold = 7\n")
    d.start()
    deadline = time.monotonic() + 20
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.05)
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"config": "threshold = 7\n", "name": "recorder", "index": "42"}
    pod_id = pods.run_pod(d.c)
    pods.stop_and_remove(d.c, pod_id)
    assert {"event": "RunPodSandbox", "pod": pod_id} in \
        [json.loads(line) for line in out.read_text().splitlines()]
    pids = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True,
                          check=False).stdout.split()
    assert len(pids) == 1
    assert d.stop() == 0
    assert not Path(f"/proc/{pids[0]}").exists() or \
        Path(f"/proc/{pids[0]}/stat").read_text().split()[2] == "Z"


def test_pod_and_container_are_not_listed_while_their_hook_runs(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    import threading
    env = container_env
    reached, release = threading.Event(), threading.Event()

    def blocking(response: Any) -> Any:
        def handler(req: Any) -> Any:
            reached.set()
            release.wait(1.5)  # within nri.plugin_request_timeout
            return response
        return handler

    cfg = pods.pod_config()
    with NriTestPlugin(daemon.nri_socket, name="blocker", handlers={
            "RunPodSandbox": blocking(nri.RunPodSandboxResponse()),
            "CreateContainer": blocking(nri.CreateContainerResponse())}) as plugin:
        out: dict[str, str] = {}
        t = threading.Thread(target=lambda: out.update(pod=pods.run_pod(daemon.c, cfg)))
        t.start()
        assert reached.wait(10)
        assert cfg.metadata.name not in [p.metadata.name for p in pods.list_pods(daemon.c)]
        release.set()
        t.join(10)
        pod_id = out["pod"]
        assert pods.status(daemon.c, pod_id).status.state == api_pb2.SANDBOX_READY
        reached.clear()
        release.clear()
        ccfg = env.config(["sleep", "1000"], name="nri-hidden")
        t = threading.Thread(target=lambda: out.update(ctr=env.create(ccfg, pod_id=pod_id,
                                                                      pod_config=cfg)))
        t.start()
        assert reached.wait(10)
        listed = env.cri.ListContainers(api_pb2.ListContainersRequest()).containers
        assert "nri-hidden" not in [c.metadata.name for c in listed]
        release.set()
        t.join(10)
        assert env.status(out["ctr"]).state == api_pb2.CONTAINER_CREATED
        assert plugin.seen(pod_id=pod_id) == ["RunPodSandbox", "CreateContainer",
                                              "PostCreateContainer"]
        env.remove(out["ctr"])
        pods.stop_and_remove(daemon.c, pod_id)


# ---------------------------------------------------------------- adjustments (2nd round)

def _hook(script: str, out: Path) -> nri.Hook:
    return nri.Hook(path="/bin/sh", args=["sh", "-c", script],
                    env=[f"OUT={out}", "PATH=/usr/bin:/bin"], timeout=nri.OptionalInt(value=10))


def _wait_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} was never written"
        time.sleep(0.05)
    return path.read_text()


def test_oci_hooks_from_a_plugin_run_at_their_points(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    import json
    env = container_env
    out = Path(tempfile.mkdtemp(prefix="pycri-nri-hooks-"))
    os.chmod(out, 0o755)

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        adj = nri.ContainerAdjustment(hooks=nri.Hooks(
            prestart=[_hook('cat > "$OUT/prestart.json"', out)],
            start_container=[_hook("cat > /hook-start.json", out)],
            poststart=[_hook('cat > "$OUT/poststart.json"', out)],
            poststop=[_hook('cat > "$OUT/poststop.json"', out)]))
        return nri.CreateContainerResponse(adjust=adj)

    try:
        with NriTestPlugin(daemon.nri_socket, name="hooker",
                           handlers={"CreateContainer": create}):
            cid = env.run(["sh", "-c", "cat /hook-start.json; echo; sleep 1000"])
            pre = json.loads(_wait_file(out / "prestart.json"))
            assert (pre["id"], pre["status"]) == (cid, "creating")
            post = json.loads(_wait_file(out / "poststart.json"))
            assert (post["id"], post["status"]) == (cid, "running") and post["pid"] > 0
            deadline = time.monotonic() + 10
            while '"status": "created"' not in "".join(x for _, x in env.log_lines(cid)):
                assert time.monotonic() < deadline, env.log_lines(cid)
                time.sleep(0.05)
            assert not (out / "poststop.json").exists()
            env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
            env.remove(cid)
            stop = json.loads(_wait_file(out / "poststop.json"))
            assert (stop["id"], stop["status"]) == (cid, "stopped")
    finally:
        shutil.rmtree(out)


DEVICE_PROBE = (
    "(exec 3<>/dev/nri-fuse) && echo fuse-opened; stat -c '%t:%T %a %u' /dev/nri-fuse; "
    "mknod /tmp/lc c 10 237 && { (exec 4</tmp/lc) 2>/dev/null && echo lc-opened "
    "|| echo lc-refused; }")


def test_a_device_from_a_plugin_is_created_and_allowed_others_stay_refused(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        adj = nri.ContainerAdjustment()
        adj.linux.devices.add(path="/dev/nri-fuse", type="c", major=10, minor=229,
                              file_mode=nri.OptionalFileMode(value=0o640),
                              uid=nri.OptionalUInt32(value=0))
        return nri.CreateContainerResponse(adjust=adj)

    with NriTestPlugin(daemon.nri_socket, name="devices",
                       handlers={"CreateContainer": create}):
        cid = env.run(["sh", "-c", DEVICE_PROBE])
        st = env.wait_exit(cid)
        out = "".join(line for _, line in env.log_lines(cid))
        assert st.exit_code == 0, out
        assert "fuse-opened" in out and "a:e5 640 0" in out, out  # 10:229, mode 0640
        assert "lc-refused" in out, out  # a device no one added stays closed
        env.remove(cid)
    cid = env.run(["sh", "-c", "test -e /dev/nri-fuse && echo there || echo absent"])
    env.wait_exit(cid)  # without the plugin: no device
    assert "absent" in "".join(line for _, line in env.log_lines(cid))
    env.remove(cid)


def test_a_cdi_device_requested_by_a_plugin_is_injected(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    from tests.support.cdi import Vendor
    env = container_env
    vendor = Vendor(daemon.base / "cdi")

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        return nri.CreateContainerResponse(adjust=nri.ContainerAdjustment(
            CDI_devices=[nri.CDIDevice(name="vendor.test/gpu=a")]))

    try:
        vendor.write("vendor.yaml", vendor.spec())
        with NriTestPlugin(daemon.nri_socket, name="cdi", handlers={"CreateContainer": create}):
            probe = "echo env=$CDI_SPEC,$CDI_A; echo hi > /dev/cdi-null && echo null-written"
            cid = env.run(["sh", "-c", probe])
            st = env.wait_exit(cid)
            out = "".join(line for _, line in env.log_lines(cid))
            assert st.exit_code == 0, out
            assert "env=spec-level,1" in out and "null-written" in out, out
            env.remove(cid)
    finally:
        vendor.close()


def test_memory_reservation_swappiness_and_cpu_realtime_reach_the_cgroup(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        adj = nri.ContainerAdjustment()
        res = adj.linux.resources
        res.memory.reservation.value = 48 * MiB
        res.memory.swappiness.value = 17
        res.cpu.realtime_period.value = 400000
        res.cpu.realtime_runtime.value = 0
        return nri.CreateContainerResponse(adjust=adj)

    with NriTestPlugin(daemon.nri_socket, name="res", handlers={"CreateContainer": create}):
        cid = env.run(["sleep", "1000"])
        out = env.exec_sync(cid, ["sh", "-c", (
            "cd /sys/fs/cgroup; cat memory/memory.soft_limit_in_bytes memory/memory.swappiness "
            "cpu/cpu.rt_period_us cpu/cpu.rt_runtime_us")]).stdout.decode().split()
        assert out == [str(48 * MiB), "17", "400000", "0"], out
        env.cri.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
        env.remove(cid)


@pytest.mark.parametrize(("linux", "code", "named"), [
    (nri.LinuxContainerAdjustment(sysctl={"net.ipv4.ip_forward": "1"}),
     grpc.StatusCode.UNIMPLEMENTED, "linux.sysctl"),
    (nri.LinuxContainerAdjustment(scheduler=nri.LinuxScheduler(policy=nri.SCHED_FIFO)),
     grpc.StatusCode.UNIMPLEMENTED, "linux.scheduler"),
    (nri.LinuxContainerAdjustment(resources=nri.LinuxResources(
        blockio_class=nri.OptionalString(value="slow"))),
     grpc.StatusCode.FAILED_PRECONDITION, "blockio_class"),
    (nri.LinuxContainerAdjustment(resources=nri.LinuxResources(devices=[
        nri.LinuxDeviceCgroup(allow=True, type="c", major=nri.OptionalInt64(value=10),
                              minor=nri.OptionalInt64(value=237), access="rwm")])),
     grpc.StatusCode.UNIMPLEMENTED, "matches no device"),
])
def test_an_adjustment_pycri_cannot_apply_fails_the_create_naming_it(
        daemon: PycriDaemon, container_env: ContainerEnv, linux: nri.LinuxContainerAdjustment,
        code: grpc.StatusCode, named: str) -> None:
    env = container_env

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        return nri.CreateContainerResponse(adjust=nri.ContainerAdjustment(linux=linux))

    with NriTestPlugin(daemon.nri_socket, name="refused", handlers={"CreateContainer": create}):
        cfg = env.config(["true"], name="nri-refused")
        err = rpc_error(env.create, cfg)
        assert err.code() == code and named in (err.details() or ""), err
        listed = env.cri.ListContainers(api_pb2.ListContainersRequest()).containers
        assert "nri-refused" not in [c.metadata.name for c in listed]


# ---------------------------------------------------------------- evictions, validation

def test_an_eviction_answer_stops_the_named_container(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    env = container_env
    victim = env.run(["sleep", "1000"])
    other = env.run(["sleep", "1000"])

    def create(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        return nri.CreateContainerResponse(evict=[nri.ContainerEviction(
            container_id=victim, reason="make room")])

    with NriTestPlugin(daemon.nri_socket, name="evictor",
                       handlers={"CreateContainer": create}) as plugin:
        cid = env.create(env.config(["true"]))
        assert env.status(victim).state == api_pb2.CONTAINER_EXITED
        assert env.status(cid).state == api_pb2.CONTAINER_CREATED
        assert env.status(other).state == api_pb2.CONTAINER_RUNNING
        plugin.wait_for(lambda: "StopContainer" in plugin.seen(container_id=victim))
        # unsolicited: UpdateContainers with an eviction
        plugin.update_containers([], evict=[nri.ContainerEviction(container_id=other,
                                                                   reason="policy")])
        assert env.status(other).state == api_pb2.CONTAINER_EXITED
        for c in (victim, other, cid):
            env.remove(c)


def test_a_validator_plugin_sees_the_adjustments_with_owners_and_can_reject(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    from tests.support.nri_plugin import mask
    env = container_env

    def adjust_env(req: nri.CreateContainerRequest) -> nri.CreateContainerResponse:
        return nri.CreateContainerResponse(adjust=nri.ContainerAdjustment(
            env=[nri.KeyValue(key="FROM_ADJUSTER", value=req.container.name)]))

    def validate(req: nri.ValidateContainerAdjustmentRequest
                 ) -> nri.ValidateContainerAdjustmentResponse:
        reject = req.container.name == "nri-rejected"
        return nri.ValidateContainerAdjustmentResponse(reject=reject, reason="not this one")

    with NriTestPlugin(daemon.nri_socket, name="adjuster", index="10",
                       handlers={"CreateContainer": adjust_env}), \
            NriTestPlugin(daemon.nri_socket, name="validator", index="90",
                          events=mask(nri.VALIDATE_CONTAINER_ADJUSTMENT),
                          handlers={"ValidateContainerAdjustment": validate}) as validator:
        err = rpc_error(env.create, env.config(["true"], name="nri-rejected"))
        assert "validator" in (err.details() or "") and "not this one" in (err.details() or "")
        listed = env.cri.ListContainers(api_pb2.ListContainersRequest()).containers
        assert "nri-rejected" not in [c.metadata.name for c in listed]
        cid = env.create(env.config(["true"], name="nri-accepted"))
        req = validator.request("ValidateContainerAdjustment", container_id=cid)
        assert [(kv.key, kv.value) for kv in req.adjust.env] == [("FROM_ADJUSTER",
                                                                  "nri-accepted")]
        assert dict(req.owners.owners[cid].compound[nri.Env].owners) == \
            {"FROM_ADJUSTER": "10-adjuster"}
        assert [(p.index, p.name) for p in req.plugins] == [("10", "adjuster"),
                                                             ("90", "validator")]
        assert validator.seen(container_id=cid) == ["ValidateContainerAdjustment"]
        env.remove(cid)


# ---------------------------------------------------------------- connection lifecycle

def test_plugins_get_shutdown_when_the_daemon_stops(fresh_daemon: PycriDaemon) -> None:
    d = fresh_daemon
    d.start()
    plugin = NriTestPlugin(d.nri_socket, name="bye").connect()
    assert d.stop() == 0
    assert plugin.endpoint is not None and plugin.endpoint.wait_closed(5)
    assert [m for m, _ in plugin.events] == ["Shutdown"]


def test_a_plugin_whose_configure_hangs_is_dropped_after_the_request_timeout(
        daemon: PycriDaemon, container_env: ContainerEnv) -> None:
    import threading
    release = threading.Event()
    hung = NriTestPlugin(daemon.nri_socket, name="stuck",
                         handlers={"Configure": lambda req: release.wait(8)})
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            hung.connect(timeout=6)
        assert hung.endpoint is not None and hung.endpoint.wait_closed(1)
        assert hung.configured is not None and hung.synchronized is None
        with NriTestPlugin(daemon.nri_socket, name="after") as fine:
            cid = container_env.create(container_env.config(["true"]))
            assert "CreateContainer" in fine.seen(container_id=cid)
            assert hung.events == []
            container_env.remove(cid)
    finally:
        release.set()
        hung.close()
    assert time.monotonic() - t0 < 15


def test_a_plugin_that_registers_after_the_timeout_is_dropped(daemon: PycriDaemon) -> None:
    from nri import mux
    from nri.endpoint import Endpoint
    from nri.ttrpc import Router
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(daemon.nri_socket))
    ep = Endpoint(s, serve_conn=mux.PLUGIN_SERVICE_CONN, call_conn=mux.RUNTIME_SERVICE_CONN,
                  router=Router(), name="late")
    ep.start()
    try:
        time.sleep(5.5)  # nri.plugin_registration_timeout is 5 s
        with pytest.raises(RpcError):
            ep.call("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin",
                    nri.RegisterPluginRequest(plugin_name="late", plugin_idx="50"),
                    nri.Empty, 3)
        assert ep.wait_closed(3)
    finally:
        ep.close("test done")


def test_disable_connections_serves_no_socket_but_runs_preinstalled_plugins() -> None:
    import json
    d = PycriDaemon(config={"nri": {"disable_connections": True}})
    out = d.base / "preinstalled.jsonl"
    d.nri_plugin_dir.mkdir()
    script = d.nri_plugin_dir / "42-recorder"
    script.write_text(PREINSTALLED.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    try:
        d.start()
        assert not d.nri_socket.exists()
        _wait_file(out, 20)  # the plugin pycri started is registered and configured
        pod_id = pods.run_pod(d.c)
        pods.stop_and_remove(d.c, pod_id)
        assert {"event": "RunPodSandbox", "pod": pod_id} in \
            [json.loads(line) for line in out.read_text().splitlines()]
    finally:
        rc = d.stop()
        d.cleanup_dirs()
    assert rc == 0
