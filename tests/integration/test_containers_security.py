"""What ContainerConfig asks for is what the process gets: security context, namespaces,
mounts, devices and cgroups, each asserted from inside the container (or on the host)."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri_server import host_features
from proto import api_pb2
from runtime.capability_names import CAPABILITY_NAMES, last_cap
from runtime.container_spec import DEFAULT_CAPABILITIES
from tests.support import pods
from tests.support.containers import ContainerEnv, proc_status, security
from tests.support.cri_client import rpc_error

SP = api_pb2.SecurityProfile


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config(hostname="sec-pod", pid=api_pb2.POD)
    cfg.linux.security_context.privileged = True  # allows privileged containers in it
    with ContainerEnv(daemon.c, pod_config=cfg) as e:
        yield e


def _linux(**sc: object) -> api_pb2.LinuxContainerConfig:
    return api_pb2.LinuxContainerConfig(security_context=security(**sc))


def _host_bounding() -> int:
    """What this host lets any process have (CAP_SYS_RESOURCE is missing on the test VMs)."""
    return int(proc_status(Path("/proc/self/status").read_text())["CapBnd"], 16)


def _all_caps() -> int:
    return ((1 << (last_cap() + 1)) - 1) & _host_bounding()


def _mask(names: list[str] | tuple[str, ...]) -> int:
    return sum(1 << CAPABILITY_NAMES.index(n) for n in names)


def _status(env: ContainerEnv, **kw: Any) -> dict[str, str]:
    return proc_status(env.output(["cat", "/proc/self/status"], **kw))


def test_default_capabilities(env: ContainerEnv) -> None:
    st = _status(env)
    assert int(st["CapEff"], 16) == _mask(DEFAULT_CAPABILITIES)
    assert int(st["CapBnd"], 16) == _mask(DEFAULT_CAPABILITIES)
    assert int(st["CapAmb"], 16) == 0 and st["NoNewPrivs"] == "0"


def test_capabilities_add_drop_all_and_ambient(env: ContainerEnv) -> None:
    st = _status(env, linux=_linux(capabilities=api_pb2.Capability(
        add_capabilities=["NET_ADMIN", "CAP_SYS_TIME"], drop_capabilities=["chown", "KILL"])))
    expected = (set(DEFAULT_CAPABILITIES) | {"CAP_NET_ADMIN", "CAP_SYS_TIME"}) - \
        {"CAP_CHOWN", "CAP_KILL"}
    assert int(st["CapEff"], 16) == _mask(sorted(expected))
    st = _status(env, linux=_linux(capabilities=api_pb2.Capability(drop_capabilities=["ALL"])))
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0
    st = _status(env, linux=_linux(capabilities=api_pb2.Capability(
        add_capabilities=["ALL"], drop_capabilities=["SYS_ADMIN"])))
    assert int(st["CapEff"], 16) == _all_caps() & ~_mask(["CAP_SYS_ADMIN"])
    # ambient: a non-root process keeps the capability across exec
    st = _status(env, linux=_linux(run_as_user=api_pb2.Int64Value(value=1000),
                                   capabilities=api_pb2.Capability(
                                       add_ambient_capabilities=["NET_BIND_SERVICE"])))
    assert st["Uid"].split()[0] == "1000"
    assert int(st["CapAmb"], 16) == _mask(["CAP_NET_BIND_SERVICE"])
    assert int(st["CapEff"], 16) == _mask(["CAP_NET_BIND_SERVICE"])
    err = rpc_error(env.create, env.config(["true"], linux=_linux(
        capabilities=api_pb2.Capability(add_capabilities=["CAP_BOGUS"]))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "CAP_BOGUS" in err.details()


def test_users_and_groups(env: ContainerEnv) -> None:
    ids = ["sh", "-c", "id -u; id -g; id -G"]
    out = env.output(ids, linux=_linux(run_as_user=api_pb2.Int64Value(value=1000),
                                       run_as_group=api_pb2.Int64Value(value=3000),
                                       supplemental_groups=[4000, 4001])).split("\n")
    assert out[0] == "1000" and out[1] == "3000" and set(out[2].split()) == {"3000", "4000", "4001"}
    out = env.output(ids, linux=_linux(run_as_username="www-data")).split("\n")
    assert out[:2] == ["33", "33"]
    out = env.output(ids, image=env.wwwdata).split("\n")            # image USER
    assert out[:2] == ["33", "33"]
    out = env.output(ids, image=env.wwwdata,                       # run_as_user wins
                     linux=_linux(run_as_user=api_pb2.Int64Value(value=1000))).split("\n")
    assert out[0] == "1000" and out[1] == "1000"
    # /etc/group memberships: Merge adds them, Strict does not
    merged = env.output(ids, image=env.groups, linux=_linux(run_as_username="www-data"))
    assert "5000" in merged.split("\n")[2].split()
    strict = env.output(ids, image=env.groups, linux=_linux(
        run_as_username="www-data", supplemental_groups=[4000],
        supplemental_groups_policy=api_pb2.Strict))
    assert set(strict.split("\n")[2].split()) == {"33", "4000"}
    cid = env.run(["sleep", "100"], image=env.groups, linux=_linux(run_as_username="www-data"))
    user = env.status(cid).user.linux
    assert (user.uid, user.gid) == (33, 33) and 5000 in user.supplemental_groups
    env.remove(cid)
    err = rpc_error(env.create, env.config(["true"], linux=_linux(
        run_as_group=api_pb2.Int64Value(value=5))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "run_as_group" in err.details()
    err = rpc_error(env.create, env.config(["true"], linux=_linux(run_as_username="nosuch")))
    assert "nosuch" in err.details()


def test_readonly_rootfs_and_no_new_privs(env: ContainerEnv) -> None:
    out = env.output(["sh", "-c", "exec 2>&1; touch /x; echo rc=$?; touch /tmp/y; echo rc=$?"],
                     linux=_linux(readonly_rootfs=True))
    assert "Read-only file system" in out and out.count("rc=1") == 2
    assert env.output(["sh", "-c", "touch /x && echo ok"]) == "ok\n"
    assert _status(env, linux=_linux(no_new_privs=True))["NoNewPrivs"] == "1"


def test_masked_and_readonly_paths(env: ContainerEnv) -> None:
    script = "exec 2>&1; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; " \
             "echo sec-pod > /proc/sys/kernel/hostname 2>&1; echo rc=$?"
    masked = env.output(["sh", "-c", script], linux=_linux(
        masked_paths=["/proc/timer_list", "/sys/firmware"], readonly_paths=["/proc/sys"]))
    lines = masked.split("\n")
    assert lines[0].strip() == "0" and lines[1].strip() == "0"
    assert "Read-only file system" in masked and "rc=1" in masked
    plain = env.output(["sh", "-c", "wc -c < /proc/timer_list"])     # empty lists: nothing masked
    assert int(plain.strip()) > 0


def test_seccomp_profiles(env: ContainerEnv) -> None:
    probe = ["sh", "-c", "busybox unshare -U true 2>&1; echo rc=$?"]
    blocked = env.output(probe, linux=_linux(seccomp=SP(profile_type=SP.RuntimeDefault)))
    assert "Operation not permitted" in blocked and "rc=1" in blocked
    allowed = env.output(probe, linux=_linux(seccomp=SP(profile_type=SP.Unconfined)))
    assert "rc=0" in allowed, allowed
    assert _status(env, linux=_linux(seccomp=SP(profile_type=SP.RuntimeDefault)))[
        "Seccomp"] == "2"
    assert _status(env)["Seccomp"] == "0"   # unset = unconfined, as containerd
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}, f)
    try:
        out = env.output(["sh", "-c", "mkdir /tmp/d 2>&1; echo rc=$?"], linux=_linux(
            seccomp=SP(profile_type=SP.Localhost, localhost_ref=f.name)))
        assert "Operation not permitted" in out and "rc=1" in out
        # privileged ignores seccomp
        out = env.output(["sh", "-c", "mkdir /tmp/d && echo ok"], linux=_linux(
            privileged=True, seccomp=SP(profile_type=SP.Localhost, localhost_ref=f.name)))
        assert out == "ok\n"
    finally:
        os.unlink(f.name)
    err = rpc_error(env.create, env.config(["true"], linux=_linux(
        seccomp=SP(profile_type=SP.Localhost, localhost_ref="/nonexistent/profile.json"))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "profile.json" in err.details()


@pytest.mark.skipif(host_features.apparmor_enabled(), reason="host has AppArmor")
def test_apparmor_profile_without_apparmor(env: ContainerEnv) -> None:
    err = rpc_error(env.create, env.config(["true"], linux=_linux(
        apparmor=SP(profile_type=SP.Localhost, localhost_ref="my-profile"))))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "my-profile" in err.details()
    # RuntimeDefault is a no-op where AppArmor is off
    assert env.output(["true"], linux=_linux(apparmor=SP(profile_type=SP.RuntimeDefault))) == ""


def test_privileged(env: ContainerEnv, daemon) -> None:  # type: ignore[no-untyped-def]
    script = "grep CapEff /proc/self/status; grep ' /sys ' /proc/mounts; ls /dev | wc -l"
    out = env.output(["sh", "-c", script], linux=_linux(privileged=True))
    lines = out.split("\n")
    assert int(lines[0].split()[1], 16) == _all_caps()
    assert " rw," in lines[1] or lines[1].split()[3].startswith("rw")
    assert int(lines[2]) > 20   # the host's devices
    # a privileged container in an unprivileged pod is refused
    with ContainerEnv(daemon.c) as plain:
        err = rpc_error(plain.create, plain.config(["true"], linux=_linux(privileged=True)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pid_namespace_modes(env: ContainerEnv) -> None:
    # the pod has a pod-wide pid namespace whose PID 1 is the pause-holder
    pod_pid1 = env.output(["sh", "-c", "cat /proc/1/comm; echo $$"])
    assert pod_pid1.split("\n")[1] != "1"
    own = env.output(["sh", "-c", "echo $$; true"], linux=_linux(
        namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)))
    assert own == "1\n"
    host = env.output(["sh", "-c", "ls /proc | grep -c '^[0-9]'"], linux=_linux(
        namespace_options=api_pb2.NamespaceOption(pid=api_pb2.NODE)))
    assert int(host) > 20
    target = env.run(["sleep", "4242"], linux=_linux(
        namespace_options=api_pb2.NamespaceOption(pid=api_pb2.CONTAINER)))
    seen = env.output(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"], linux=_linux(
        namespace_options=api_pb2.NamespaceOption(pid=api_pb2.TARGET, target_id=target)))
    assert seen.strip() == "sleep 4242"
    env.remove(target)


def test_namespaces_shared_with_the_pod(env: ContainerEnv) -> None:
    cid = env.run(["sleep", "1000"])
    pid = env.info(cid)["pid"]
    pause = pods.info(env.cri, env.pod_id)["pid"]
    for ns in ("net", "ipc", "uts", "pid"):   # the pod has a pod-wide pid namespace
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}")
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{pause}/ns/{ns}")
    assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    env.remove(cid)


def test_bind_mounts_rw_ro_file_and_symlink(env: ContainerEnv, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in").write_text("from host\n")
    (tmp_path / "file").write_text("a file\n")
    (tmp_path / "link").symlink_to(data)
    script = ("exec 2>&1; cat /rw/in /f; echo new > /rw/out; cat /ln/in; "
              "echo x > /ro/y 2>&1; echo rc=$?")
    out = env.output(["sh", "-c", script],
                     mounts=[api_pb2.Mount(container_path="/rw", host_path=str(data)),
                             api_pb2.Mount(container_path="/f", host_path=str(tmp_path / "file"),
                                           readonly=True),
                             api_pb2.Mount(container_path="/ln", host_path=str(tmp_path / "link")),
                             api_pb2.Mount(container_path="/ro", host_path=str(data),
                                           readonly=True, selinux_relabel=True)])
    assert out.startswith("from host\na file\nfrom host\n")
    assert "Read-only file system" in out and "rc=1" in out
    assert (data / "out").read_text() == "new\n"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host directory that is a shared mount (so propagation into/out of containers works)."""
    base = Path(tempfile.mkdtemp(prefix="pycri-prop-"))
    subprocess.run(["mount", "--bind", str(base), str(base)], check=True)
    subprocess.run(["mount", "--make-rshared", str(base)], check=True)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-R", str(base)], check=False)
        subprocess.run(["rmdir", str(base / "sub")], check=False)
        base.rmdir()


def test_propagation_host_to_container(env: ContainerEnv, shared_dir: Path) -> None:
    (shared_dir / "sub").mkdir()
    cid = env.run(["sh", "-c", "while true; do sleep 0.1; done"],
                  mounts=[api_pb2.Mount(container_path="/shared", host_path=str(shared_dir),
                                        propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER)])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(shared_dir / "sub")],
                   check=True)
    (shared_dir / "sub" / "hello").write_text("late mount\n")
    r = env.exec_sync(cid, ["cat", "/shared/sub/hello"])
    assert r.stdout == b"late mount\n", r.stderr
    env.remove(cid)
    subprocess.run(["umount", str(shared_dir / "sub")], check=True)


def test_propagation_bidirectional(env: ContainerEnv, shared_dir: Path) -> None:
    (shared_dir / "sub").mkdir()
    cid = env.run(["sh", "-c", "while true; do sleep 0.1; done"], linux=_linux(privileged=True),
                  mounts=[api_pb2.Mount(container_path="/shared", host_path=str(shared_dir),
                                        propagation=api_pb2.PROPAGATION_BIDIRECTIONAL)])
    r = env.exec_sync(cid, ["sh", "-c", ("mount -t tmpfs tmpfs /shared/sub && "
                                         "echo from-container > /shared/sub/f")])
    assert r.exit_code == 0, r.stderr
    deadline = time.monotonic() + 3
    while not (shared_dir / "sub" / "f").exists():
        assert time.monotonic() < deadline, "the container's mount did not reach the host"
        time.sleep(0.05)
    assert (shared_dir / "sub" / "f").read_text() == "from-container\n"
    env.exec_sync(cid, ["umount", "/shared/sub"])
    env.remove(cid)
    # propagation needs a shared (or slave) source: a private one is refused clearly
    private = Path(tempfile.mkdtemp(prefix="pycri-priv-"))
    try:
        err = rpc_error(env.create, env.config(["true"], mounts=[api_pb2.Mount(
            container_path="/p", host_path=str(private),
            propagation=api_pb2.PROPAGATION_BIDIRECTIONAL)]))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "shared" in err.details()
    finally:
        private.rmdir()


@pytest.mark.skipif(not host_features.recursive_read_only_mounts(), reason="kernel < 5.12")
def test_recursive_read_only(env: ContainerEnv, shared_dir: Path) -> None:
    sub = shared_dir / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(sub)], check=True)
    try:
        probe = ["sh", "-c", "touch /m/sub/x 2>&1; echo rc=$?"]
        rro = env.output(probe, mounts=[api_pb2.Mount(
            container_path="/m", host_path=str(shared_dir), readonly=True,
            recursive_read_only=True)])
        assert "rc=1" in rro
        ro = env.output(probe, mounts=[api_pb2.Mount(
            container_path="/m", host_path=str(shared_dir), readonly=True)])
        assert "rc=0" in ro    # plain readonly leaves submounts writable
        for bad in (api_pb2.Mount(container_path="/m", host_path=str(shared_dir),
                                  recursive_read_only=True),
                    api_pb2.Mount(container_path="/m", host_path=str(shared_dir), readonly=True,
                                  recursive_read_only=True,
                                  propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER)):
            err = rpc_error(env.create, env.config(["true"], mounts=[bad]))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        subprocess.run(["umount", str(sub)], check=True)


def test_devices(env: ContainerEnv) -> None:
    out = env.output(["sh", "-c", "ls -l /dev/xnull; echo hi > /dev/xnull && echo ok"],
                     devices=[api_pb2.Device(host_path="/dev/null", container_path="/dev/xnull",
                                             permissions="rwm")])
    assert out.startswith("c") and out.endswith("ok\n")


def _cgroup_file(env: ContainerEnv, cid: str, controller: str, name: str) -> str:
    path = env.info(cid)["runtimeSpec"]["cgroup"]["path"]
    return Path(f"/sys/fs/cgroup/{controller}{path}/{name}").read_text().strip()


def test_cgroup_limits(env: ContainerEnv) -> None:
    res = api_pb2.LinuxContainerResources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                                          memory_limit_in_bytes=64 << 20, cpuset_cpus="0",
                                          oom_score_adj=500)
    cid = env.run(["sleep", "1000"], linux=api_pb2.LinuxContainerConfig(resources=res))
    if host_features.cgroup_mode() == "v1":
        assert _cgroup_file(env, cid, "cpu", "cpu.shares") == "512"
        assert _cgroup_file(env, cid, "cpu", "cpu.cfs_quota_us") == "50000"
        assert _cgroup_file(env, cid, "cpu", "cpu.cfs_period_us") == "100000"
        assert _cgroup_file(env, cid, "memory", "memory.limit_in_bytes") == str(64 << 20)
        assert _cgroup_file(env, cid, "cpuset", "cpuset.cpus") == "0"
        pid = env.info(cid)["pid"]
        assert str(pid) in _cgroup_file(env, cid, "memory", "cgroup.procs").split()
    else:
        assert _cgroup_file(env, cid, "", "memory.max") == str(64 << 20)
    pid = env.info(cid)["pid"]
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "500"
    env.remove(cid)


def test_oom_killed(env: ContainerEnv) -> None:
    res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=32 << 20,
                                          memory_swap_limit_in_bytes=32 << 20)
    cid = env.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                  linux=api_pb2.LinuxContainerConfig(resources=res))
    st = env.wait_exit(cid, timeout=20)
    assert (st.exit_code, st.reason) == (137, "OOMKilled")
    env.remove(cid)


def test_image_volume_mounts_read_only(env: ContainerEnv) -> None:
    for image in (env.merge, env.groups):      # one layer (bind) and two layers (overlay)
        script = ("exec 2>&1; ls /iv/bin/busybox; cat /iv/etc/group | grep -c extra; "
                  "touch /iv/new; echo rc=$?")
        out = env.output(["sh", "-c", script],
                         mounts=[api_pb2.Mount(container_path="/iv",
                                               image=api_pb2.ImageSpec(image=image),
                                               readonly=True)])
        assert out.startswith("/iv/bin/busybox\n") and "rc=1" in out
        assert out.split("\n")[1] == ("1" if image == env.groups else "0")
