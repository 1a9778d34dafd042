"""Pod user namespaces on cgroup v2 with every controller (VM leg, issue 15): the container's
cgroup is delegated to its root (runtime.cgroups.delegation), through the real gRPC API.

Container root may build sub-cgroups and move its own processes below its cgroup; the limits
(memory.max, ...) stay host-owned files it cannot write, and they still hold.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import api_pb2
from tests.integration.test_user_namespaces import LENGTH, UsernsEnv, userns_pod_config
from tests.support import pods
from tests.support.cri_client import CriClient
from tests.support.daemon import PycriDaemon

MiB = 1 << 20
ROOT = Path("/sys/fs/cgroup")
HOST_ID = 65536 * 42


@pytest.fixture(scope="module")
def env(daemon: PycriDaemon) -> Iterator[UsernsEnv]:
    e = UsernsEnv(daemon.c, pod_config=userns_pod_config(HOST_ID, hostname="uns-v2"))
    with e:
        yield e


def _cg(env: UsernsEnv, cid: str) -> Path:
    return ROOT / env.info(cid)["runtimeSpec"]["cgroup"]["path"].lstrip("/")


def _owner(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_uid, st.st_gid


def _sleeper(env: UsernsEnv, **kw: object) -> str:
    cid = env.run(["sleep", "1000"], **kw)
    assert pods.wait_until(lambda: env.status(cid).state == api_pb2.CONTAINER_RUNNING)
    return cid


def test_user_namespaces_supported_on_this_kernel(cri: CriClient) -> None:
    resp = cri.Status(api_pb2.StatusRequest(verbose=True))
    assert json.loads(resp.info["userNamespaces"]) == {"supported": True, "reason": ""}
    assert resp.runtime_handlers and all(h.features.user_namespaces
                                         for h in resp.runtime_handlers)


def test_cgroup_is_delegated_to_the_mapped_root(env: UsernsEnv) -> None:
    cid = _sleeper(env)
    cg = _cg(env, cid)
    try:
        out = env.exec_sync(cid, ["cat", "/proc/self/uid_map", "/proc/self/gid_map"])
        assert out.exit_code == 0, out.stderr
        assert [line.split() for line in out.stdout.decode().splitlines()] == [
            ["0", str(HOST_ID), str(LENGTH)]] * 2
        mapped = (HOST_ID, HOST_ID)
        delegated = {"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"}
        delegated |= set((ROOT / "../../kernel/cgroup/delegate").resolve().read_text().split())
        for name in delegated:
            if (cg / name).exists() or name == "":
                assert _owner(cg / name) == mapped, name
        for name in ("memory.max", "pids.max", "cpu.max", "cgroup.max.descendants",
                     "cgroup.kill", "cgroup.type"):
            assert _owner(cg / name) == (0, 0), name
        assert _owner(cg.parent) == (0, 0)
        # inside: root of its own cgroup namespace, a writable cgroupfs, only /sys read-only
        out = env.exec_sync(cid, ["sh", "-c", ("cat /proc/self/cgroup; stat -c '%u %g' "
                                  "/sys/fs/cgroup /sys/fs/cgroup/memory.max; "
                                  "grep -E ' /sys(/fs/cgroup)? ' /proc/self/mountinfo")])
        assert out.exit_code == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        assert lines[:3] == ["0::/", "0 0", "65534 65534"]
        opts = {ln.split()[4]: ln.split()[5].split(",") for ln in lines[3:]}
        assert "ro" in opts["/sys"] and "rw" in opts["/sys/fs/cgroup"]
    finally:
        env.remove(cid)
    assert not cg.exists()


def test_container_root_builds_sub_cgroups_but_cannot_raise_limits(env: UsernsEnv) -> None:
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
    cid = _sleeper(env, linux=api_pb2.LinuxContainerConfig(resources=res))
    cg = _cg(env, cid)
    pid = env.container_pid(cid)
    try:
        script = (
            "set -e; mkdir /sys/fs/cgroup/sub /sys/fs/cgroup/init; "
            # the container's own sleep (pid 1 of its pid namespace) and this shell move down
            "echo 1 > /sys/fs/cgroup/init/cgroup.procs; echo $$ > /sys/fs/cgroup/sub/cgroup.procs; "
            "cat /proc/self/cgroup; cat /proc/1/cgroup; "
            # now an empty inner node: controllers can be given to the sub-cgroups
            "echo '+memory +pids' > /sys/fs/cgroup/cgroup.subtree_control; "
            "echo 20 > /sys/fs/cgroup/sub/pids.max; cat /sys/fs/cgroup/sub/pids.max; "
            "for f in memory.max pids.max memory.high; do "
            "  if echo max > /sys/fs/cgroup/$f 2>/dev/null; then echo $f written; "
            "  else echo $f refused; fi; done; cat /sys/fs/cgroup/memory.max")
        out = env.exec_sync(cid, ["sh", "-c", script], timeout=60)
        assert out.exit_code == 0, (out.stdout, out.stderr)
        assert out.stdout.decode().splitlines() == [
            "0::/sub", "0::/init", "20", "memory.max refused", "pids.max refused",
            "memory.high refused", str(64 * MiB)]
        # the host sees the same tree, owned by the mapped root, limits unchanged
        assert _owner(cg / "sub") == (HOST_ID, HOST_ID)
        assert (cg / "init" / "cgroup.procs").read_text().split() == [str(pid)]
        assert (cg / "memory.max").read_text().strip() == str(64 * MiB)
        assert set((cg / "cgroup.subtree_control").read_text().split()) == {"memory", "pids"}
        # exec still works: the container cgroup is an inner node now, it joins the init's
        out = env.exec_sync(cid, ["cat", "/proc/self/cgroup"])
        assert (out.exit_code, out.stdout) == (0, b"0::/init\n"), out.stderr
    finally:
        env.remove(cid)
    assert not cg.exists()


def test_memory_limit_holds_below_a_delegated_cgroup(env: UsernsEnv) -> None:
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 * MiB,
                                          memory_swap_limit_in_bytes=32 * MiB)
    cid = _sleeper(env, linux=api_pb2.LinuxContainerConfig(resources=res))
    cg = _cg(env, cid)
    try:
        script = (
            "set -e; mkdir /sys/fs/cgroup/hog /sys/fs/cgroup/init; "
            "echo 1 > /sys/fs/cgroup/init/cgroup.procs; echo $$ > /sys/fs/cgroup/hog/cgroup.procs; "
            # its own child's limit may be lifted; the host-set one above it still holds
            "echo +memory > /sys/fs/cgroup/cgroup.subtree_control; "
            "echo max > /sys/fs/cgroup/hog/memory.max; cat /proc/self/cgroup; "
            "dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null && echo survived "
            "|| echo dd exit $?")
        out = env.exec_sync(cid, ["sh", "-c", script], timeout=120)
        assert out.exit_code == 0, (out.stdout, out.stderr)
        assert out.stdout.decode().splitlines() == ["0::/hog", "dd exit 137"]
        assert (cg / "hog" / "memory.max").read_text().strip() == "max"
        assert (cg / "memory.max").read_text().strip() == str(32 * MiB)
        events = dict(line.split() for line in (cg / "memory.events").read_text().splitlines())
        assert int(events["oom_kill"]) >= 1
        assert env.status(cid).state == api_pb2.CONTAINER_RUNNING  # only the hog died
    finally:
        env.remove(cid)
    assert not cg.exists()


def test_host_users_pod_cgroupfs_stays_read_only(daemon: PycriDaemon) -> None:
    from tests.support.containers import ContainerEnv
    with ContainerEnv(daemon.c) as e:
        out = e.output(["sh", "-c", ("mkdir /sys/fs/cgroup/x 2>&1; grep ' /sys/fs/cgroup ' "
                        "/proc/self/mountinfo")])
    assert "Read-only file system" in out
    assert "ro" in out.splitlines()[-1].split()[5].split(",")


def test_nothing_left_behind(daemon: PycriDaemon, env: UsernsEnv) -> None:
    cid = _sleeper(env)
    pod_cg = _cg(env, cid).parent
    env.exec_sync(cid, ["mkdir", "/sys/fs/cgroup/left"])
    env.close()  # removes the container (its sub-cgroup too) and the pod
    assert not pod_cg.exists()
    left = pods.leftovers(daemon)
    # the session daemon's parent cgroup may still hold other modules' pods
    assert {k: v for k, v in left.items() if k != "cgroups"} == {}
