"""runtime.container_init without shim or daemon: security context, rootfs, mounts, cgroups.

Each test forks an init from tests/support/init_runner.py (a single-threaded helper process)
on a busybox lower layer built from Debian's dynamically linked /bin/busybox, and asserts from
inside the container. Needs root.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import container_spec as cs
from runtime import seccomp
from runtime.capability_names import capabilities_to_mask
from runtime.cgroups import open_cgroup
from tests.integration.init_support import (
    Box,
    cap_hex,
    error_of,
    finish,
    is_mountpoint,
    ok,
    run_init,
    start_init,
    status_field,
)
from tests.support.busybox_rootfs import build_busybox_rootfs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture(scope="module")
def lower() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="pycri-init-lower-")
    root = build_busybox_rootfs(os.path.join(base, "l"))
    with open(os.path.join(root, "etc/secret"), "w") as f:
        f.write("top secret\n")
    os.symlink("/etc/secret", os.path.join(root, "etc/masklink"))
    os.makedirs(os.path.join(root, "data"))
    os.symlink("/data", os.path.join(root, "rolink"))
    os.symlink("/../../../../../../tmp", os.path.join(root, "escape"))
    os.symlink("/proc/self/fd/3", os.path.join(root, "fdlink"))
    yield root
    shutil.rmtree(base)


@pytest.fixture(scope="module")
def cgroup_parent() -> Iterator[str]:
    parent = f"/pycri-inittest-{os.getpid()}"
    yield parent
    open_cgroup(parent).remove()


@pytest.fixture
def box(lower: str, cgroup_parent: str) -> Iterator[Box]:
    b = Box(lower, cgroup_parent)
    yield b
    b.cleanup()


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# --------------------------------------------------------------------------- security

def test_default_security_context(box: Box) -> None:
    res = run_init(box.spec(sh("cat /proc/self/status; echo FDS; ls /proc/1/fd; hostname")))
    out = ok(res)
    want = cap_hex(cs.default_capabilities())
    assert status_field(out, "CapEff") == want
    assert status_field(out, "CapBnd") == want
    assert status_field(out, "CapPrm") == want
    assert status_field(out, "CapAmb") == "0000000000000000"
    assert status_field(out, "NoNewPrivs") == "1"
    assert status_field(out, "Seccomp") == "2"
    assert status_field(out, "SigIgn") == "0000000000000000"
    assert status_field(out, "SigBlk") == "0000000000000000"
    assert out.split("FDS\n", 1)[1].split() == ["0", "1", "2", "ctr"]
    assert res["init_ms"] < 2000  # sanity only; timing belongs in bench/
    ready = next(m for m in res["reports"] if "ready" in m)
    assert ready["user"] == {"uid": 0, "gid": 0, "groups": [0]}


def test_capabilities_add_drop_all_and_ambient(box: Box) -> None:
    caps = cs.compute_capabilities(add=["CHOWN", "NET_ADMIN"], drop=["ALL"],
                                   add_ambient=["CAP_NET_BIND_SERVICE"])
    out = ok(run_init(box.spec(sh("grep Cap /proc/self/status"), process_capabilities=caps,
                               process_user={"uid": 1000})))
    assert status_field(out, "CapBnd") == cap_hex(["CAP_CHOWN", "CAP_NET_ADMIN",
                                                   "CAP_NET_BIND_SERVICE"])
    # non-root after exec: only the ambient set survives
    assert status_field(out, "CapAmb") == cap_hex(["CAP_NET_BIND_SERVICE"])
    assert status_field(out, "CapEff") == cap_hex(["CAP_NET_BIND_SERVICE"])


def test_privileged_gets_all_capabilities_and_rw_sys(box: Box) -> None:
    spec = box.spec(sh("grep CapEff /proc/self/status; touch /sys/kernel/uevent_helper "
                       "2>/dev/null; grep ' /sys ' /proc/mounts"), privileged=True)
    out = ok(run_init(spec))
    with open("/proc/self/status") as f:  # everything the runtime itself holds
        host_eff = int(status_field(f.read(), "CapEff"), 16)
    assert int(status_field(out, "CapEff"), 16) == capabilities_to_mask(
        cs.all_capabilities()) & host_eff
    assert " rw," in out.split("\n", 1)[1]


def test_user_resolution(box: Box) -> None:
    res = run_init(box.spec(["id"], process_user={"username": "alice",
                                                  "supplemental_groups": [4242]}))
    assert ok(res).strip() == ("uid=1000(alice) gid=1000(alice) "
                               "groups=29(audio),50(staff),1000(alice),4242")
    assert res["reports"][-1]["user"] == {"uid": 1000, "gid": 1000, "groups": [1000, 50, 29,
                                                                            4242]}


def test_user_uid_gid_strict_policy(box: Box) -> None:
    out = ok(run_init(box.spec(["id"], process_user={
        "uid": 1001, "gid": 33, "supplemental_groups": [7], "policy": "Strict"})))
    assert out.strip() == "uid=1001(bob) gid=33(www-data) groups=7,33(www-data)"


def test_unknown_username_is_clear_error(box: Box) -> None:
    res = run_init(box.spec(["id"], process_user={"username": "mallory"}))
    err = error_of(res)
    assert err["kind"] == "InvalidArgument"
    assert "mallory" in err["error"] and "/etc/passwd" in err["error"]


def test_readonly_rootfs_masked_and_readonly_paths(box: Box) -> None:
    spec = box.spec(sh(
        "echo x > /newfile && echo ROOTFS-WRITABLE; "
        "echo MASK:$(cat /etc/secret):$(cat /etc/masklink):$(cat /proc/timer_list | wc -c); "
        "echo y > /data/f && echo DATA-WRITABLE; echo y > /rolink/g && echo LINK-WRITABLE; "
        "echo 1 > /proc/sys/kernel/ns_last_pid && echo PROCSYS-WRITABLE; "
        "echo tmp > /tmp/ok 2>/dev/null; echo done"),
        masked_paths=[*cs.default_masked_paths(), "/etc/masklink"],
        readonly_paths=[*cs.default_readonly_paths(), "/rolink"],
        mounts=[*cs.default_mounts(), {"destination": "/tmp", "type": "tmpfs",
                                       "source": "tmpfs", "options": ["mode=1777"]}])
    spec["rootfs"]["readonly"] = True
    out = ok(run_init(spec))
    assert "ROOTFS-WRITABLE" not in out
    assert "MASK:::0" in out  # the symlink's target is masked, the link reads empty too
    assert "DATA-WRITABLE" not in out and "LINK-WRITABLE" not in out
    assert "PROCSYS-WRITABLE" not in out
    assert out.strip().endswith("done")
    assert not os.path.exists(os.path.join(box.dir, "upper/newfile"))


def test_seccomp_runtime_default_blocks_with_eperm(box: Box) -> None:
    # CAP_SYS_ADMIN granted, profile built for the default caps: only seccomp can say no
    caps = cs.compute_capabilities(add=["SYS_ADMIN"])
    prof = seccomp.runtime_default_profile(cs.default_capabilities())
    blocked = run_init(box.spec(sh("unshare -u true; echo rc=$?"), process_capabilities=caps,
                                seccomp=prof))
    out = ok(blocked)
    assert "Operation not permitted" in blocked["stderr"] and "rc=1" in out
    control = run_init(box.spec(sh("unshare -u true; echo rc=$?"), process_capabilities=caps,
                                seccomp=None))
    assert "rc=0" in ok(control)


def test_seccomp_custom_profile_errno_and_unknown_names(box: Box) -> None:
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat", "no_such_syscall_xyz"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}
    res = run_init(box.spec(sh("mkdir /tmp/d; echo rc=$?"), seccomp=prof,
                            process_no_new_privs=False))
    assert "rc=1" in ok(res)
    assert "Permission denied" in res["stderr"]


def test_no_new_privs_off_and_rlimits_oom_score_adj(box: Box) -> None:
    with open("/proc/self/oom_score_adj") as f:
        current = int(f.read())
    out = ok(run_init(box.spec(
        sh("grep NoNewPrivs /proc/self/status; ulimit -n; cat /proc/self/oom_score_adj"),
        process_no_new_privs=False, process_oom_score_adj=current + 100,
        process_rlimits=[{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 10**9}])))
    lines = out.split()
    assert lines[1] == "0" and lines[2] == "512" and lines[3] == str(current + 100)
    lower = ok(run_init(box.spec(["cat", "/proc/self/oom_score_adj"],
                                 process_oom_score_adj=-1000)))
    assert int(lower) >= -1000  # clamped to the current value where it cannot be lowered


def test_named_apparmor_profile_without_apparmor_is_error(box: Box) -> None:
    if os.path.isdir("/sys/kernel/security/apparmor"):
        pytest.skip("host has AppArmor")
    err = error_of(run_init(box.spec(["true"], process_apparmor_profile="localhost/foo")))
    assert err["kind"] == "InvalidArgument" and "foo" in err["error"]
    ok(run_init(box.spec(["true"], process_apparmor_profile="runtime/default")))


# --------------------------------------------------------------------------- mounts, /dev, cwd

def test_dev_nodes_and_symlinks(box: Box) -> None:
    out = ok(run_init(box.spec(sh(
        "for n in null zero full random urandom tty; do stat -c '%n %t:%T %F' /dev/$n; done; "
        "for n in ptmx fd stdin stdout stderr; do readlink /dev/$n; done; "
        "echo hi > /dev/null && head -c 4 /dev/zero | wc -c; ls /dev/pts/ptmx; "
        "grep -E ' /dev/(pts|shm|mqueue) ' /proc/mounts | cut -d' ' -f3"))))
    assert "/dev/null 1:3 character special file" in out
    assert "/dev/urandom 1:9 character special file" in out
    assert "/dev/tty 5:0 character special file" in out
    assert "pts/ptmx\n/proc/self/fd\n/proc/self/fd/0\n/proc/self/fd/1\n/proc/self/fd/2" in out
    assert "\n4\n/dev/pts/ptmx\ndevpts\ntmpfs\nmqueue" in out


def test_bind_mounts_rw_ro_rro(box: Box) -> None:
    host = tempfile.mkdtemp(prefix="pycri-bind-")
    sub = os.path.join(host, "sub")
    os.mkdir(sub)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", sub], check=True)
    try:
        with open(os.path.join(host, "file.txt"), "w") as f:
            f.write("from host\n")
        mounts = [*cs.default_mounts(),
                  cs.bind_mount(host, "/rw"), cs.bind_mount(host, "/ro", readonly=True),
                  cs.bind_mount(host, "/rro", recursive_readonly=True),
                  cs.bind_mount(os.path.join(host, "file.txt"), "/etc/single.txt",
                                readonly=True)]
        out = ok(run_init(box.spec(sh(
            "echo a > /rw/a && echo RW-OK; echo b > /ro/b || echo RO-DENIED; "
            "echo c > /ro/sub/c && echo RO-SUB-OK; echo d > /rro/sub/d || echo RRO-SUB-DENIED; "
            "cat /etc/single.txt"), mounts=mounts)))
        assert "RW-OK" in out and "RO-DENIED" in out
        assert "RO-SUB-OK" in out  # plain readonly is not recursive
        assert "RRO-SUB-DENIED" in out
        assert "from host" in out
        assert os.path.exists(os.path.join(host, "a"))
        assert not os.path.exists(os.path.join(sub, "d"))
    finally:
        subprocess.run(["umount", sub], check=True)
        shutil.rmtree(host)


def test_missing_bind_source_names_the_field(box: Box) -> None:
    mounts = [*cs.default_mounts(), cs.bind_mount("/nonexistent/pycri/xyz", "/x")]
    err = error_of(run_init(box.spec(["true"], mounts=mounts)))
    assert err["kind"] == "InvalidArgument"
    assert f"mounts[{len(mounts) - 1}].source" in err["error"]
    assert "/nonexistent/pycri/xyz" in err["error"]


def test_mount_propagation_both_ways(box: Box) -> None:
    src = tempfile.mkdtemp(prefix="pycri-prop-")
    subprocess.run(["mount", "--bind", src, src], check=True)
    subprocess.run(["mount", "--make-shared", src], check=True)
    for d in ("fromctr", "fromhost", "ctronly"):
        os.mkdir(os.path.join(src, d))
    caps = cs.compute_capabilities(add=["SYS_ADMIN"])
    mounts = [*cs.default_mounts(),
              cs.bind_mount(src, "/bidir", propagation="rshared"),
              cs.bind_mount(src, "/slave", propagation="rslave")]
    script = ("mount -t tmpfs ctr /bidir/fromctr && touch /bidir/fromctr/m; "
              "mount -t tmpfs ctr2 /slave/ctronly && touch /slave/ctronly/m2; "
              "i=0; while [ ! -e /slave/fromhost/hm ] && [ $i -lt 200 ]; do sleep 0.05; "
              "i=$((i+1)); done; ls /slave/fromhost /bidir/fromhost")
    proc = start_init(box.spec(sh(script), process_capabilities=caps, seccomp=None,
                               mounts=mounts))
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(os.path.join(src, "fromctr/m")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert is_mountpoint(os.path.join(src, "fromctr")), "rshared: ctr mount not on host"
        assert not is_mountpoint(os.path.join(src, "ctronly")), "rslave leaked to the host"
        subprocess.run(["mount", "-t", "tmpfs", "host", os.path.join(src, "fromhost")],
                       check=True)
        open(os.path.join(src, "fromhost/hm"), "w").close()
        out = ok(finish(proc))
        assert out.split() == ["/bidir/fromhost:", "hm", "/slave/fromhost:", "hm"] or \
            out.count("hm") == 2, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for d in ("fromctr", "fromhost"):
            subprocess.run(["umount", os.path.join(src, d)], capture_output=True, check=False)
        subprocess.run(["umount", src], check=True)
        shutil.rmtree(src)


def test_rshared_needs_shared_source(box: Box) -> None:
    src = tempfile.mkdtemp(prefix="pycri-prop-")
    try:
        mounts = [*cs.default_mounts(), cs.bind_mount(src, "/bidir", propagation="rshared")]
        err = error_of(run_init(box.spec(["true"], mounts=mounts)))
        assert "not a shared mount" in err["error"] and "mounts[7]" in err["error"]
    finally:
        shutil.rmtree(src)


def test_working_dir_created_and_symlink_escapes_stay_inside(box: Box, lower: str) -> None:
    marker = tempfile.mkdtemp(prefix="pycri-escape-")
    name = os.path.basename(marker)
    try:
        # /escape -> /../../../tmp : resolved inside the rootfs, never the host's /tmp
        mounts = [*cs.default_mounts(), {"destination": f"/escape/{name}/m", "type": "tmpfs",
                                         "source": "tmpfs", "options": []}]
        out = ok(run_init(box.spec(sh("pwd; ls -d /tmp/*/m"), mounts=mounts,
                                   process_cwd=f"/escape/{name}/work/dir")))
        assert out.split() == [f"/tmp/{name}/work/dir", f"/tmp/{name}/m"]
        assert os.listdir(marker) == []
        assert os.path.isdir(os.path.join(box.dir, "upper/tmp", name, "work/dir"))
    finally:
        shutil.rmtree(marker)


@pytest.mark.parametrize("cwd", ["/proc/self/fd/3", "/fdlink", "/proc/1/cwd"])
def test_working_dir_in_proc_is_refused(box: Box, cwd: str) -> None:
    err = error_of(run_init(box.spec(["pwd"], process_cwd=cwd)))
    assert err["kind"] == "InvalidArgument" and "process.cwd" in err["error"]


def test_missing_executable(box: Box) -> None:
    res = run_init(box.spec(["no-such-binary"]))
    err = error_of(res)
    assert "no-such-binary" in err["error"] and "not found" in err["error"]
    assert not any("ready" in m for m in res["reports"])


def test_gate_eof_aborts_without_exec(box: Box) -> None:
    res = run_init(box.spec(sh("echo RAN")), start=False)
    assert any("ready" in m for m in res["reports"])
    assert res["exit_code"] == 1 and "RAN" not in res["stdout"]


def test_init_at_gate_cannot_be_ptraced_by_the_container(box: Box) -> None:
    """Between ready and exec the init runs our code with the container's uid and
    capabilities and holds the shim's report pipe (a {"pid": N} there redirects the shim's
    kills and exec namespaces to host pid N): a root process of the pod with the same
    capabilities must not get ptrace access to it (non-dumpable until execve, as runc)."""
    res = run_init(box.spec(sh("echo RAN")), probe_exe_at_gate=True)
    assert res["probe_exe"] == "denied", res
    assert ok(res) == "RAN\n"  # execve made it dumpable again: nothing else changes


def test_exec_into_running_container(box: Box) -> None:
    spec = box.spec(["sleep", "30"], process_cwd="/work", process_user={"uid": 1000})
    res = run_init(spec, exec=[
        {"args": ["sh", "-c", ("id; pwd; echo $FOO; grep -E 'CapBnd|NoNewPrivs|Seccomp:' "
                               "/proc/self/status; cat /proc/1/cmdline; echo; hostname")]},
        {"args": ["id"], "user": {"uid": 0}, "env": ["PATH=/bin"], "cwd": "/"},
        {"args": ["nope"]}])
    first, second, third = res["exec_results"]
    assert first["exit_code"] == 0, res
    lines = first["stdout"].splitlines()
    assert lines[0].startswith("uid=1000(alice)")
    assert lines[1:3] == ["/work", "bar"]
    assert status_field(first["stdout"], "CapBnd") == cap_hex(cs.default_capabilities())
    assert status_field(first["stdout"], "NoNewPrivs") == "1"
    assert status_field(first["stdout"], "Seccomp") == "2"
    assert "sleep" in lines[-2] and lines[-1] == "ctr"
    assert second["stdout"].startswith("uid=0(root)")
    assert third["exit_code"] == 127
    assert "nope" in error_of({"reports": res["exec_reports"][2]})["error"]


# --------------------------------------------------------------------------- cgroups

def test_cgroup_limits_visible_inside_and_on_host(box: Box) -> None:
    res = {"memory_limit_in_bytes": 96 << 20, "cpu_shares": 512, "cpu_quota": 50000,
           "cpu_period": 100000, "pids_limit": 77, "cpuset_cpus": "0", "cpuset_mems": "0"}
    spec = box.spec(sh("cd /sys/fs/cgroup; cat memory/memory.limit_in_bytes cpu/cpu.shares "
                       "cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us pids/pids.max "
                       "cpuset/cpuset.cpus cpuset/cpuset.mems; cat /proc/self/cgroup | "
                       "grep memory; echo 1 > memory/memory.limit_in_bytes || echo RO"))
    spec["cgroup"]["resources"] = res
    out = ok(run_init(spec))
    lines = out.split()
    assert lines[:7] == [str(96 << 20), "512", "50000", "100000", "77", "0", "0"]
    assert lines[7].endswith(":memory:/")  # cgroup namespace: the container is the root
    assert "RO" in lines


def test_memory_hog_is_oom_killed(box: Box) -> None:
    spec = box.spec(sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"))
    spec["cgroup"]["resources"] = {"memory_limit_in_bytes": 24 << 20,
                                   "memory_swap_limit_in_bytes": 24 << 20}
    res = run_init(spec, timeout=30)
    assert res["exit_code"] == 137, res
    assert res["oom_kill_count"] >= 1
    assert "survived" not in res["stdout"]


def test_no_cgroup_left_after_failed_create(box: Box, cgroup_parent: str) -> None:
    spec = box.spec(["true"], process_user={"username": "mallory"})
    error_of(run_init(spec))
    assert not os.path.exists(f"/sys/fs/cgroup/memory{cgroup_parent}/{box.id}")


def test_devices_and_device_cgroup(box: Box) -> None:
    out = ok(run_init(box.spec(sh(
        "stat -c '%t:%T %F' /dev/xnull; echo hi > /dev/xnull && echo DEV-OK; "
        "mknod /tmp/kmsg c 1 11 && cat /tmp/kmsg; echo rc=$?"),
        devices=[{"host_path": "/dev/null", "container_path": "/dev/xnull",
                  "permissions": "rwm"}])))
    assert out.startswith("1:3 character special file\nDEV-OK\n")
    assert "rc=1" in out  # the node can be made (CAP_MKNOD) but the devices cgroup denies it


def test_typed_device_nodes_need_no_host_node(box: Box) -> None:
    """CDI device nodes: made from type/major/minor/mode/uid/gid alone; a rule per node with
    permissions, none for permissions "" (and none for a FIFO)."""
    node = {"host_path": "/nonexistent/fuse", "container_path": "/dev/xfuse",
            "permissions": "rw", "type": "c", "major": 10, "minor": 229, "file_mode": 0o640,
            "uid": 7, "gid": 8}
    fifo = {"host_path": "/nonexistent/fifo", "container_path": "/run/xfifo",
            "permissions": "", "type": "p", "major": 0, "minor": 0, "file_mode": 0o600,
            "uid": 0, "gid": 0}
    norule = {**node, "container_path": "/dev/yfuse", "permissions": ""}
    out = ok(run_init(box.spec(sh(
        "stat -c '%t:%T %a %u:%g %F' /dev/xfuse /run/xfifo; "
        "(exec 3<>/dev/xfuse) && echo X-OPEN; (exec 3<>/dev/yfuse) 2>/dev/null || echo Y-DENIED; "
        "mknod /tmp/lc c 10 237 && { (exec 3</tmp/lc) 2>/dev/null || echo LC-DENIED; }"),
        devices=[norule, node, fifo])))
    assert out.splitlines()[:2] == ["a:e5 640 7:8 character special file",
                                    "0:0 600 0:0 fifo"], out
    # /dev/yfuse is the same device 10:229 as /dev/xfuse, so its rule allows both
    assert "X-OPEN" in out and "LC-DENIED" in out, out


def test_intel_rdt_group_is_joined_before_the_namespaces(box: Box, tmp_path_factory: Any
                                                         ) -> None:
    """resctrl is a host filesystem: the init writes its host pid to the group's tasks (the
    container's processes inherit the group); schemata lines go to the group. Laid out in a
    plain directory: the test machine has no resctrl."""
    root = tmp_path_factory.mktemp("resctrl")
    (root / "info").mkdir()
    (root / "gold").mkdir()
    for name in ("tasks", "schemata"):
        (root / "gold" / name).write_text("")
    spec = box.spec(sh("cat /proc/self/status | grep ^NSpid"),
                    intel_rdt={"root": str(root), "clos_id": "gold",
                               "schemata": ["L3:0=ff"]})
    ok(run_init(spec))
    pid = int((root / "gold" / "tasks").read_text())
    assert pid > 1 and (root / "gold" / "schemata").read_text() == "L3:0=ff\n"
    missing = box.spec(["true"], intel_rdt={"root": str(root / "none"), "clos_id": "gold"})
    assert "resctrl filesystem is not mounted" in error_of(run_init(missing))["error"]


def test_join_namespaces_by_path_and_host_pid(box: Box) -> None:
    holder = subprocess.Popen(["unshare", "--net", "--uts", "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        host_net = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{holder.pid}/ns/net") == host_net:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        want = {n: os.readlink(f"/proc/{holder.pid}/ns/{n}") for n in ("net", "uts")}
        spec = box.spec(sh("readlink /proc/self/ns/net /proc/self/ns/uts /proc/self/ns/pid "
                           "| cat; for n in net uts pid; do readlink /proc/self/ns/$n; done"),
                        namespaces=[{"type": "network", "path": f"/proc/{holder.pid}/ns/net"},
                                    {"type": "uts", "path": f"/proc/{holder.pid}/ns/uts"},
                                    {"type": "mount", "path": None}])
        res = run_init(spec)
        out = ok(res).split()[-3:]
        assert out == [want["net"], want["uts"], os.readlink("/proc/self/ns/pid")]
        assert res["pid"] == next(m["pid"] for m in res["reports"] if "pid" in m)
    finally:
        holder.kill()
        holder.wait()


def test_join_missing_namespace_path_is_error(box: Box) -> None:
    spec = box.spec(["true"], namespaces=[{"type": "network", "path": "/nonexistent/ns/net"}])
    err = error_of(run_init(spec))
    assert "namespaces[network].path" in err["error"] and "/nonexistent/ns/net" in err["error"]


def test_overlay_image_volume_mount(box: Box, lower: str) -> None:
    second = tempfile.mkdtemp(prefix="pycri-layer-")
    try:
        with open(os.path.join(second, "layer2.txt"), "w") as f:
            f.write("top layer\n")
        vol = {"destination": "/imgvol", "type": "overlay", "source": "overlay",
               "options": ["ro", f"lowerdir={second}:{lower}"], "readonly": True}
        out = ok(run_init(box.spec(sh("cat /imgvol/layer2.txt; ls /imgvol/bin/busybox; "
                                      "touch /imgvol/x || echo RO"),
                                   mounts=[*cs.default_mounts(), vol])))
        assert out.split() == ["top", "layer", "/imgvol/bin/busybox", "RO"]
    finally:
        shutil.rmtree(second)


def test_cgroup_mount_without_cgroup_namespace_shows_own_cgroup(box: Box) -> None:
    spec = box.spec(sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                       "/sys/fs/cgroup/pids/pids.max; ls /sys/fs/cgroup/memory | grep -c "
                       "pycri; grep memory /proc/self/cgroup; touch /sys/fs/cgroup/pids/x "
                       "|| echo RO"),
                    namespaces=[{"type": t, "path": None} for t in ("ipc", "uts", "pid",
                                                                     "network")])
    spec["cgroup"]["resources"] = {"memory_limit_in_bytes": 40 << 20, "pids_limit": 33}
    out = ok(run_init(spec)).split()
    assert out[:3] == [str(40 << 20), "33", "0"]  # its own cgroup, not the host's tree
    assert out[3].endswith(f":memory:{spec['cgroup']['path']}")  # host cgroup namespace
    assert out[4] == "RO"
