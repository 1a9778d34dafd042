"""Pod sandboxes across daemon crashes, dead shims and failing CNI plugins.

Each test runs its own daemon. The failure tests use a conflist of their own
(bridge on the test bridge + host-local with a private data dir and its own
slice of the test subnet + a fake plugin steered by a control file), so "no IP
allocation left" is checked exactly.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_server.sandboxes import CRASH_POINTS
from proto import api_pb2
from tests.support import pods
from tests.support.cri_client import rpc_error
from tests.support.daemon import TEST_BRIDGE, PycriDaemon

FAKE_PLUGIN = f"""#!{sys.executable}
import json, os, shutil, sys, time
conf = json.load(sys.stdin)
ctl = json.load(open(conf["control"])) if "control" in conf else {{}}
cmd = os.environ.get("CNI_COMMAND")
def fail(msg):
    print(json.dumps({{"cniVersion": conf.get("cniVersion", "1.0.0"), "code": 999, "msg": msg}}))
    sys.exit(1)
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0",
                      "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]}}))
if cmd in ("ADD", "DEL"):
    with open(conf["control"] + ".calls", "a") as log:
        log.write(cmd + " " + os.environ["CNI_CONTAINERID"] + "\\n")
if cmd == "ADD":
    time.sleep(ctl.get("sleep_add", 0))
    if ctl.get("fail_add"):
        fail("fake plugin fails ADD as told")
    if ctl.get("remove_pod_dir"):  # the pod set-up then fails after a successful ADD
        shutil.rmtree(os.path.join(ctl["remove_pod_dir"], os.environ["CNI_CONTAINERID"]))
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": conf["cniVersion"]}}))
elif cmd == "DEL":
    if ctl.get("sleep_del"):  # then notes whether the pod's pause-holder outlived the sleep
        time.sleep(ctl["sleep_del"])
        mark = ("pycri-pause " + os.environ["CNI_CONTAINERID"]).encode()
        alive = False
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                alive |= open(f"/proc/{{pid}}/cmdline", "rb").read().replace(b"\\0", b" ").startswith(mark)
            except OSError:
                pass
        with open(conf["control"] + ".pause", "a") as log:
            log.write(("alive" if alive else "gone") + "\\n")
    if ctl.get("fail_del"):
        fail("fake plugin fails DEL as told")
"""


class FakeNet:
    """bridge + host-local (private data dir) [+ the fake plugin] for one test daemon."""

    def __init__(self, base: Path, with_fake: bool = True) -> None:
        self.bin_dir = base / "cni-bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        plugin = self.bin_dir / "pycri-fake"
        plugin.write_text(FAKE_PLUGIN)
        plugin.chmod(0o755)
        self.control = base / "fake-control.json"
        self.ipam_dir = base / "ipam"
        self.set()
        plugins: list[dict[str, Any]] = [{
            "type": "bridge", "bridge": TEST_BRIDGE, "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "dataDir": str(self.ipam_dir),
                     "ranges": [[{"subnet": "10.233.0.0/16", "rangeStart": "10.233.200.1",
                                  "rangeEnd": "10.233.239.254", "gateway": "10.233.0.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]
        if with_fake:
            plugins.append({"type": "pycri-fake", "control": str(self.control)})
        self.conflist = {"cniVersion": "1.0.0", "name": "pycritest-fake", "plugins": plugins}

    def set(self, **control: Any) -> None:
        self.control.write_text(json.dumps(control))

    def ips(self) -> list[str]:
        d = self.ipam_dir / "pycritest-fake"
        if not d.exists():
            return []
        return sorted(n for n in os.listdir(d) if n[0].isdigit())

    def calls(self, command: str) -> list[str]:
        """Pod ids the fake plugin got `command` (ADD/DEL) for, in order."""
        try:
            lines = Path(str(self.control) + ".calls").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line.split()[1] for line in lines if line.split()[0] == command]


@pytest.fixture
def fake_daemon() -> Iterator[tuple[PycriDaemon, FakeNet]]:
    d = PycriDaemon(config={})
    net = FakeNet(d.base)
    d2 = PycriDaemon(base=d.base, config={"cni": {
        "conf_dir": str(d.cni_conf_dir), "bin_dirs": [str(net.bin_dir), "/usr/lib/cni",
                                                      "/opt/cni/bin"]}})
    (d2.cni_conf_dir / "10-fake.conflist").write_text(json.dumps(net.conflist))
    try:
        yield d2, net
    finally:
        _teardown(d2)


def _teardown(d: PycriDaemon) -> None:
    try:
        if d.proc is not None and d.proc.poll() is None:
            pods.remove_all(d.c, [p.id for p in pods.list_pods(d.c)])
    finally:
        d.stop()
        for pid in pods.monitor_pids_of(d.base):  # only after a failed test
            os.kill(pid, signal.SIGKILL)
        d.cleanup_dirs()


def _assert_clean(d: PycriDaemon, net: FakeNet | None = None) -> None:
    assert pods.leftovers(d) == {}
    assert pods.wait_until(lambda: pods.shim_pids_of(d.base) == [], timeout=10)
    if net is not None:
        assert net.ips() == []


# -- daemon crash and restart ---------------------------------------------------------------

def test_kill9_restart_keeps_pods_ready(fresh_daemon) -> None:  # type: ignore[no-untyped-def]
    d = fresh_daemon.start()
    a = pods.run_pod(d.c)
    b = pods.run_pod(d.c, pods.pod_config(pid=api_pb2.POD, host_network=False))
    before = {i: (pods.status(d.c, i).status.network.ip, pods.info(d.c, i)) for i in (a, b)}
    d.restart(crash=True)
    try:
        for pod_id, (ip, info) in before.items():
            st = pods.status(d.c, pod_id).status
            assert st.state == api_pb2.SANDBOX_READY
            assert st.network.ip == ip
            now = pods.info(d.c, pod_id)
            assert (now["shimPid"], now["pid"]) == (info["shimPid"], info["pid"])
        assert {p.id for p in pods.list_pods(d.c)} == {a, b}
        with pods.PodListener(before[b][1]["netnsPath"]):
            assert pods.tcp_hello(before[b][0]) == b"hello from pod\n"
    finally:
        for pod_id in (a, b):
            pods.stop_and_remove(d.c, pod_id)
    _assert_clean(d)


def _zygotes(d: PycriDaemon) -> set[int]:
    marker = f"runtime.zygote --socket {d.state}/zygote.sock"
    found = set()
    for entry in os.listdir("/proc"):
        try:
            if (entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == "python3"
                    and marker in Path(f"/proc/{entry}/cmdline").read_bytes()
                    .replace(b"\0", b" ").decode()):
                found.add(int(entry))
        except OSError:
            continue
    return found


def test_zygote_does_not_outlive_its_daemon(fresh_daemon) -> None:  # type: ignore[no-untyped-def]
    d = fresh_daemon.start()
    pod_id = pods.run_pod(d.c)
    (old,) = _zygotes(d)
    d.restart(crash=True)  # kill -9: the old zygote notices and exits; the new daemon has its own
    try:
        assert pods.wait_until(lambda: old not in _zygotes(d), timeout=10)
        assert len(_zygotes(d)) == 1
        assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_READY
    finally:
        pods.stop_and_remove(d.c, pod_id)
    d.stop()
    assert pods.wait_until(lambda: not _zygotes(d), timeout=10)


def test_dead_shim_and_pause_show_notready_and_can_be_removed(fresh_daemon) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the monitor: a successor monitor takes back every pod it served, except one
    whose pause-holder is gone too (a dead monitor alone is adopted: test_shim_adopt): that
    one is NOTREADY, before and after a restart; new pods go to the successor."""
    d = fresh_daemon.start()
    pod_id = pods.run_pod(d.c)
    other = pods.run_pod(d.c)
    info = pods.info(d.c, pod_id)
    assert pods.info(d.c, other)["shimPid"] == info["shimPid"]  # one monitor serves both
    os.kill(info["pid"], signal.SIGKILL)
    os.kill(info["shimPid"], signal.SIGKILL)
    new = ""
    try:
        assert pods.wait_until(lambda: pods.status(d.c, pod_id).status.state
                               == api_pb2.SANDBOX_NOTREADY)
        assert pods.wait_until(lambda: pods.info(d.c, other)["shimPid"] != info["shimPid"])
        successor = pods.info(d.c, other)["shimPid"]
        d.restart(crash=True)
        assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_NOTREADY
        assert pods.status(d.c, other).status.state == api_pb2.SANDBOX_READY
        new = pods.run_pod(d.c)
        assert pods.info(d.c, new)["shimPid"] == successor
        ready = api_pb2.PodSandboxFilter(
            state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY))
        assert sorted(p.id for p in pods.list_pods(d.c, ready)) == sorted([other, new])
        pods.stop(d.c, pod_id)
        pods.stop(d.c, pod_id)
        pods.remove(d.c, pod_id)
    finally:
        pods.stop_and_remove(d.c, other)
        if new:
            pods.stop_and_remove(d.c, new)
    _assert_clean(d)


def test_zygote_restarted_when_it_died(fresh_daemon) -> None:  # type: ignore[no-untyped-def]
    from runtime.zygote_client import ZygoteClient

    d = fresh_daemon.start()
    zygote_pid = ZygoteClient(str(d.state / "zygote.sock")).ping()
    os.kill(zygote_pid, signal.SIGKILL)
    pod_id = pods.run_pod(d.c)
    try:
        assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_READY
        assert ZygoteClient(str(d.state / "zygote.sock")).ping() != zygote_pid
    finally:
        pods.stop_and_remove(d.c, pod_id)
    _assert_clean(d)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_during_run_pod_sandbox(fake_daemon, point) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    d.start(extra_env={"PYCRI_CRASH_AT": point})
    cfg = pods.pod_config(pid=api_pb2.POD)
    err = rpc_error(pods.run_pod, d.c, cfg)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    d.kill9()  # reap the crashed daemon
    d.start()
    remaining = pods.list_pods(d.c)
    if point == "runp_ready":  # the pod was complete: it is kept
        assert [p.metadata.name for p in remaining] == [cfg.metadata.name]
        assert remaining[0].state == api_pb2.SANDBOX_READY
        assert pods.status(d.c, remaining[0].id).status.network.ip.startswith("10.233.2")
        pods.remove(d.c, remaining[0].id)
    else:  # half-made: rolled back at start-up
        assert remaining == []
    _assert_clean(d, net)
    assert pods.run_pod(d.c, cfg)  # the name is free again


# -- failing CNI plugins -----------------------------------------------------------------------

def test_cni_add_failure_leaves_nothing(fake_daemon) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    net.set(fail_add=True)
    d.start()
    err = rpc_error(pods.run_pod, d.c, pods.pod_config(pid=api_pb2.POD))
    assert "fake plugin fails ADD" in err.details()
    assert pods.list_pods(d.c) == []
    _assert_clean(d, net)   # the bridge plugin ran first: its IP and veth are gone too
    net.set()
    pod_id = pods.run_pod(d.c)
    assert net.ips() != []
    pods.stop_and_remove(d.c, pod_id)
    _assert_clean(d, net)


def test_failure_after_successful_cni_add_leaves_nothing(fake_daemon) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    net.set(remove_pod_dir=str(d.root / "pods"))
    d.start()
    err = rpc_error(pods.run_pod, d.c, pods.pod_config())
    assert err.code() != grpc.StatusCode.OK
    assert pods.list_pods(d.c) == []
    _assert_clean(d, net)


def test_cni_del_failure_is_retried(fake_daemon) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    d.start()
    pod_id = pods.run_pod(d.c)
    net.set(fail_del=True)
    err = rpc_error(pods.stop, d.c, pod_id)
    assert "fake plugin fails DEL" in err.details()
    err = rpc_error(pods.remove, d.c, pod_id)
    assert "fake plugin fails DEL" in err.details()
    d.restart(crash=True)
    net.set()
    pods.stop(d.c, pod_id)
    assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_NOTREADY
    pods.remove(d.c, pod_id)
    _assert_clean(d, net)


def test_stop_runs_cni_del_beside_the_shim_shutdown_and_returns_after_both(
        fake_daemon) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    d.start()
    pod_id = pods.run_pod(d.c)
    net.set(sleep_del=1.0)
    started = time.monotonic()
    pods.stop(d.c, pod_id)
    took = time.monotonic() - started
    assert took >= 1.0                                # DEL was done when Stop returned
    assert net.calls("DEL") == [pod_id]
    # the shim (and with it the pause-holder) was shut down while DEL ran, not after it
    assert Path(str(net.control) + ".pause").read_text().split() == ["gone"]
    assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_NOTREADY
    net.set()
    pods.remove(d.c, pod_id)
    _assert_clean(d, net)


# -- kubelet retries ---------------------------------------------------------------------------

def test_kubelet_retry_while_first_in_flight(fake_daemon) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    net.set(sleep_add=1.5)
    d.start()
    cfg = pods.pod_config()
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            pods.run_pod(d.c, cfg, timeout=0.5)
        except grpc.RpcError as exc:
            results["first"] = exc.code()

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.2)
    different = api_pb2.PodSandboxConfig()
    different.CopyFrom(cfg)
    different.hostname = "other"
    err = rpc_error(pods.run_pod, d.c, different)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    t.join()
    assert results["first"] == grpc.StatusCode.DEADLINE_EXCEEDED
    retry = pods.run_pod(d.c, cfg, timeout=30)  # waits for the first one to finish
    assert pods.run_pod(d.c, cfg) == retry
    assert net.calls("ADD") == [retry]          # one pod set up, not three
    named = [p for p in pods.list_pods(d.c) if p.metadata.name == cfg.metadata.name]
    assert [p.id for p in named] == [retry]
    assert len(net.ips()) == 1
    pods.stop_and_remove(d.c, retry)
    _assert_clean(d, net)


# -- cgroup drivers ----------------------------------------------------------------------------

def test_systemd_driver_without_systemd_fails_pod_creation() -> None:
    """cgroup_driver = "systemd" on a host where systemd is not PID 1 (this one), or whose bus
    does not answer: RunPodSandbox fails with FAILED_PRECONDITION saying what to do, as
    containerd fails pod creation, and leaves nothing behind (tests/vm/test_systemd_driver.py
    runs the driver under systemd)."""
    env = {}
    if os.path.isdir("/run/systemd/system"):  # a CI host booted with systemd: no bus instead
        env["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=/nonexistent/pycri-test-bus"
    d = PycriDaemon(config={"cgroup_driver": "systemd"}, env=env)
    try:
        d.start()
        err = rpc_error(pods.run_pod, d.c, pods.pod_config(uid="1234-abcd"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        assert 'cgroup_driver is "systemd" but' in err.details()
        assert ("systemd is not running" in err.details()
                or "cannot reach systemd's D-Bus system bus" in err.details()), err.details()
        assert 'set cgroup_driver = "cgroupfs"' in err.details()
        assert pods.list_pods(d.c) == []
        slice_name = d.cgroup_parent.strip("/").replace("-", "_") + ".slice"
        assert not any(Path(root, slice_name).exists()
                       for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/memory"))
    finally:
        _teardown(d)


def test_bad_cni_config_fails_cleanly(fake_daemon) -> None:  # type: ignore[no-untyped-def]
    d, net = fake_daemon
    broken = dict(net.conflist)
    broken["plugins"] = [*net.conflist["plugins"], {"type": "pycri-no-such-plugin"}]
    (d.cni_conf_dir / "10-fake.conflist").write_text(json.dumps(broken))
    d.start()
    conditions = {c.type: c for c in d.c.Status(api_pb2.StatusRequest()).status.conditions}
    assert conditions["NetworkReady"].status is False
    assert "pycri-no-such-plugin" in conditions["NetworkReady"].message
    err = rpc_error(pods.run_pod, d.c, pods.pod_config())
    assert "pycri-no-such-plugin" in err.details()
    assert pods.list_pods(d.c) == []
    _assert_clean(d, net)
