"""CDI devices through the real gRPC API: a test vendor's spec (device nodes the test makes with
mknod, a mount, env, extra groups, OCI hooks of every kind), asked for by CDI_devices and by the
cdi.k8s.io/ annotation form; the cgroup allow-list, clean failures, reload while running, and
edits that survive a daemon restart."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.cdi import FUSE, LOOP_CONTROL, Vendor
from tests.support.containers import ContainerEnv
from tests.support.cri_client import rpc_error
from tests.support.daemon import PycriDaemon


@pytest.fixture
def vendor(daemon: PycriDaemon) -> Iterator[Vendor]:
    v = Vendor(daemon.base / "cdi")
    try:
        yield v
    finally:
        v.close()


def _cdi(*names: str) -> list[api_pb2.CDIDevice]:
    return [api_pb2.CDIDevice(name=n) for n in names]


PROBE = (
    "echo hi > /dev/cdi-null && echo null-written; "
    "head -c 3 /dev/cdi-zero | od -An -tx1; "
    "(exec 3<>/dev/cdi-fuse) && echo fuse-opened; "
    f"mknod /tmp/lc c {LOOP_CONTROL[0]} {LOOP_CONTROL[1]} && "
    "{ (exec 4</tmp/lc) 2>/dev/null && echo lc-opened || echo lc-refused; }; "
    "echo env=$CDI_SPEC,$CDI_A,$CDI_B; cat /cdi-mnt/file; "
    "(echo x > /cdi-mnt/w) 2>/dev/null || echo mnt-ro; id -G; "
    "cat /hook-start.json; echo")


def test_two_devices_get_nodes_mounts_env_groups_and_hooks(
        container_env: ContainerEnv, vendor: Vendor, daemon: PycriDaemon) -> None:
    env = container_env
    vendor.write("vendor.yaml", vendor.spec())
    cid = env.run(["sh", "-c", PROBE], CDI_devices=_cdi("vendor.test/gpu=a", "vendor.test/gpu=b"))
    st = env.wait_exit(cid)
    out = "".join(line for _, line in env.log_lines(cid))
    assert st.exit_code == 0, out
    assert "null-written" in out
    assert " 00 00 00" in out
    assert "fuse-opened" in out            # the CDI rule opened 10:229 in the devices cgroup
    assert "lc-refused" in out             # ... and nothing else
    assert "env=spec-level,1,2" in out
    assert "from the vendor" in out and "mnt-ro" in out
    assert "4242" in out.split()
    start_state = json.loads(out[out.index('{"ociVersion"'):].splitlines()[0])
    assert start_state["id"] == cid and start_state["status"] == "created"

    host_netns = os.readlink("/proc/self/ns/net")
    runtime_state = json.loads((vendor.out / "createRuntime.json").read_text())
    create_state = json.loads((vendor.out / "createContainer.json").read_text())
    for s in (runtime_state, create_state):
        assert s["id"] == cid and s["status"] == "creating" and s["pid"] > 0
        assert s["bundle"] == str(daemon.root / "containers" / cid)
    assert (vendor.out / "createRuntime.netns").read_text().strip() == host_netns
    assert (vendor.out / "createContainer.netns").read_text().strip() != host_netns
    poststart = json.loads((vendor.out / "poststart.json").read_text())
    assert poststart["status"] == "running"

    info = env.info(cid)
    assert info["cdiDevices"] == ["vendor.test/gpu=a", "vendor.test/gpu=b"]
    paths = {d["container_path"] for d in info["runtimeSpec"]["devices"]}
    assert {"/dev/cdi-null", "/dev/cdi-zero", "/dev/cdi-fuse"} <= paths
    assert not (vendor.out / "poststop.json").exists()
    env.remove(cid)
    assert json.loads((vendor.out / "poststop.json").read_text())["status"] == "stopped"


def test_annotation_form_and_status_info(container_env: ContainerEnv, vendor: Vendor) -> None:
    env = container_env
    spec = vendor.spec()
    spec["containerEdits"] = {}
    vendor.write("vendor.json", spec)
    probe = ("head -c 2 /dev/cdi-zero | od -An -tx1; echo B=$CDI_B; "
             "ls /dev/cdi-null 2>/dev/null || echo no-a; "
             f"mknod /tmp/f c {FUSE[0]} {FUSE[1]}; "
             "{ (exec 3<>/tmp/f) 2>/dev/null && echo fuse-opened; } || echo fuse-refused")
    out = env.output(["sh", "-c", probe],
                     annotations={"cdi.k8s.io/test-plugin": "vendor.test/gpu=b"})
    assert " 00 00" in out and "B=2" in out and "no-a" in out
    assert "fuse-refused" in out  # without device a's rule the devices cgroup says no
    info = json.loads(env.cri.Status(api_pb2.StatusRequest(verbose=True)).info["cdi"])
    assert "vendor.test/gpu=a" in info["devices"] and info["errors"] == {}


def _leftovers(daemon: PycriDaemon) -> tuple[list[str], list[str]]:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if str(daemon.base) in line]
    return sorted(os.listdir(daemon.root / "containers")), mounts


@pytest.mark.parametrize(("request_kw", "expect"), [
    ({"CDI_devices": _cdi("vendor.test/gpu=nope")}, "vendor.test/gpu=nope"),
    ({"CDI_devices": _cdi("other.test/kind=x")}, "other.test/kind"),
    ({"CDI_devices": _cdi("not-qualified")}, "not fully qualified"),
    ({"annotations": {"cdi.k8s.io/x": "vendor.test/gpu=a,vendor.test/gpu=missing"}},
     "vendor.test/gpu=missing"),
])
def test_unknown_device_fails_cleanly(container_env: ContainerEnv, vendor: Vendor,
                                      daemon: PycriDaemon, request_kw: dict[str, Any],
                                      expect: str) -> None:
    env = container_env
    vendor.write("vendor.yaml", vendor.spec())
    before = _leftovers(daemon)
    cfg = env.config(["true"], name="cdi-unknown", **request_kw)
    err = rpc_error(env.create, cfg)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expect in (err.details() or "")
    if "nope" in expect:
        assert "a, b" in (err.details() or "")   # what the registry holds
    assert _leftovers(daemon) == before
    names = [c.metadata.name for c in env.cri.ListContainers(
        api_pb2.ListContainersRequest()).containers]
    assert "cdi-unknown" not in names
    cid = env.create(env.config(["true"], name="cdi-unknown"))  # the name is free
    env.remove(cid)


def test_failing_hook_fails_create_and_leaves_nothing(
        container_env: ContainerEnv, vendor: Vendor, daemon: PycriDaemon) -> None:
    env = container_env
    spec = vendor.spec()
    spec["containerEdits"] = {"hooks": [vendor.hook("createContainer",
                                                    "echo vendor says no >&2; exit 3")]}
    vendor.write("vendor.yaml", spec)
    before = _leftovers(daemon)
    err = rpc_error(env.create, env.config(["true"], CDI_devices=_cdi("vendor.test/gpu=b")))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "exited with 3" in (err.details() or "")
    assert "vendor says no" in (err.details() or "")
    assert _leftovers(daemon) == before


def test_failing_start_container_hook_fails_start(container_env: ContainerEnv,
                                                  vendor: Vendor) -> None:
    env = container_env
    spec = vendor.spec()
    spec["containerEdits"] = {"hooks": [{"hookName": "startContainer", "path": "/bin/sh",
                                         "args": ["sh", "-c", "echo not today >&2; exit 5"]}]}
    vendor.write("vendor.yaml", spec)
    cid = env.create(env.config(["sh", "-c", "echo user process ran"],
                                CDI_devices=_cdi("vendor.test/gpu=b")))
    err = rpc_error(env.start_container, cid)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "startContainer hook 0" in (err.details() or "")
    assert "not today" in (err.details() or "")
    assert env.wait_exit(cid).exit_code != 0
    assert "user process ran" not in "".join(line for _, line in env.log_lines(cid))
    env.remove(cid)


def test_spec_added_or_changed_while_running_is_picked_up(
        container_env: ContainerEnv, vendor: Vendor) -> None:
    env = container_env
    cfg = env.config(["sh", "-c", "echo V=$LATE"], CDI_devices=_cdi("late.test/thing=one"))
    err = rpc_error(env.create, cfg)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    late: dict[str, Any] = {"cdiVersion": "0.3.0", "kind": "late.test/thing",
            "devices": [{"name": "one", "containerEdits": {"env": ["LATE=1"]}}]}
    path = vendor.write("late.json", late)
    assert env.output(["sh", "-c", "echo V=$LATE"],
                      CDI_devices=_cdi("late.test/thing=one")) == "V=1\n"
    # rewritten in place (same size: only the mtime tells)
    late["devices"][0]["containerEdits"]["env"] = ["LATE=2"]
    time.sleep(0.01)
    path.write_text(json.dumps(late))
    assert env.output(["sh", "-c", "echo V=$LATE"],
                      CDI_devices=_cdi("late.test/thing=one")) == "V=2\n"


def test_broken_spec_is_reported_and_others_work(container_env: ContainerEnv,
                                                 vendor: Vendor) -> None:
    env = container_env
    vendor.write("vendor.yaml", vendor.spec())
    broken = vendor.write("broken.yaml", "a: &x [1]\nb: *x\n")
    fifo = vendor.spec_dir / "fifo.json"
    os.mkfifo(fifo)
    vendor.files.append(fifo)
    out = env.output(["sh", "-c", "echo B=$CDI_B"], CDI_devices=_cdi("vendor.test/gpu=b"))
    assert out == "B=2\n"
    errors = json.loads(env.cri.Status(api_pb2.StatusRequest(verbose=True)).info["cdi"])["errors"]
    assert "alias" in errors[str(broken)] and "FIFO" in errors[str(fifo)]


def test_edits_survive_a_daemon_restart(fresh_daemon: PycriDaemon) -> None:
    fresh_daemon.start()
    vendor = Vendor(fresh_daemon.base / "cdi")
    try:
        with ContainerEnv(fresh_daemon.c) as env:
            vendor.write("vendor.yaml", vendor.spec())
            cid = env.create(env.config(["sh", "-c", "ls /dev/cdi-zero; echo B=$CDI_B"],
                                        CDI_devices=_cdi("vendor.test/gpu=b")))
            for f in vendor.files:       # the spec is gone: only the stored edits are left
                f.unlink()
            fresh_daemon.restart(crash=False)
            env.cri = fresh_daemon.c
            info = env.info(cid)
            assert info["cdiDevices"] == ["vendor.test/gpu=b"]
            assert any(d["container_path"] == "/dev/cdi-zero"
                       for d in info["runtimeSpec"]["devices"])
            assert info["runtimeSpec"]["hooks"]["poststop"]
            env.start_container(cid)
            assert env.wait_exit(cid).exit_code == 0
            out = "".join(line for _, line in env.log_lines(cid))
            assert "/dev/cdi-zero" in out and "B=2" in out
            env.remove(cid)
            assert json.loads((vendor.out / "poststop.json").read_text())["id"] == cid
            assert pods.list_pods(env.cri)
    finally:
        vendor.close()


def test_cdi_bench_runs_one_round() -> None:
    """bench/cdi_create keeps working (its figures are not judged here)."""
    import subprocess
    import sys

    from tests.support.daemon import REPO_ROOT
    proc = subprocess.run([sys.executable, "-m", "bench.cdi_create", "--rounds", "1"],
                          cwd=REPO_ROOT, check=False, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["2 CDI devices"]["n"] == 1 and out["no CDI device"]["median_ms"] > 0
