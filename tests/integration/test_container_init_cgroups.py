"""runtime.cgroups against the real hierarchies of this host (root): v1 controllers, and the
cgroup2 mount (hybrid: /sys/fs/cgroup/unified, no controllers) for what it supports."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from runtime import cgroups
from runtime.cgroups.manager import V1Cgroup, V2Cgroup, open_cgroup
from runtime.cgroups.mode import detect_mode, unified_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "30"])
    yield p
    if p.poll() is None:
        p.kill()
    p.wait()


def test_mode_detection_matches_mounts() -> None:
    with open("/proc/self/mounts") as f:
        mounts = f.read()
    m = detect_mode()
    if " /sys/fs/cgroup cgroup2 " in mounts:
        assert m == "v2"
    elif " /sys/fs/cgroup/unified cgroup2 " in mounts:
        assert m == "hybrid" and unified_root() == "/sys/fs/cgroup/unified"
    else:
        assert m == "v1"


def test_real_cgroup_create_apply_attach_stats_remove(
        sleeper: subprocess.Popen[bytes]) -> None:
    path = f"/pycri-cgtest-{os.getpid()}/c1"
    cg = cgroups.create_cgroup(path, {"memory_limit_in_bytes": 50 << 20, "cpu_shares": 256,
                                      "cpu_quota": 20000, "pids_limit": 9,
                                      "cpuset_cpus": "0"})
    try:
        cgroups.attach(path, sleeper.pid)
        assert cg.pids() == [sleeper.pid]
        st = cgroups.read_stats(path)
        assert st["pids_current"] == 1 and st["memory_usage_bytes"] >= 0
        assert st["oom_kill_count"] == 0
        if isinstance(cg, V1Cgroup):
            with open(os.path.join(cg.dir("memory"), "memory.limit_in_bytes")) as f:
                assert int(f.read()) == 50 << 20
            with open(os.path.join(cg.dir("cpu"), "cpu.cfs_quota_us")) as f:
                assert int(f.read()) == 20000
            if cg.unified_root:  # hybrid: joined the cgroup2 hierarchy too
                with open(os.path.join(cg.unified_root, path.lstrip("/"), "cgroup.procs")) as f:
                    assert f.read().split() == [str(sleeper.pid)]
        cgroups.apply_resources(path, {"pids_limit": 20})  # UpdateContainerResources
        assert cgroups.read_stats(path)["pids_current"] == 1
        if isinstance(cg, V1Cgroup):  # grow memory past an earlier memory+swap limit
            mem = cg.dir("memory")
            cgroups.apply_resources(path, {"memory_limit_in_bytes": 50 << 20,
                                           "memory_swap_limit_in_bytes": 50 << 20})
            cgroups.apply_resources(path, {"memory_limit_in_bytes": 80 << 20})
            for name in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                if os.path.exists(os.path.join(mem, name)):
                    with open(os.path.join(mem, name)) as f:
                        assert int(f.read()) == 80 << 20, name
    finally:
        cgroups.remove_cgroup(path)  # SIGKILLs the process still inside
        cgroups.remove_cgroup(os.path.dirname(path))
    sleeper.wait(5)
    assert sleeper.returncode == -9
    assert not open_cgroup(path).exists()
    assert not os.path.exists(f"/sys/fs/cgroup/memory{os.path.dirname(path)}")


def test_real_cgroup2_mount_create_attach_remove(sleeper: subprocess.Popen[bytes]) -> None:
    root = unified_root()
    if root is None:
        pytest.skip("no cgroup2 mount")
    parent = f"/pycri-cg2test-{os.getpid()}"
    cg = V2Cgroup(parent + "/pod/ctr", root)
    cg.create()
    try:
        assert cg.exists()
        cg.attach(sleeper.pid)
        assert cg.pids() == [sleeper.pid]
        assert cg.oom_kill_count() == 0
    finally:
        V2Cgroup(parent, root).remove()
    deadline = time.monotonic() + 5
    while sleeper.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sleeper.returncode == -9
    assert not os.path.exists(os.path.join(root, parent.lstrip("/")))


_DEVICE_PROBE = """
import os, sys
sys.stdin.read(1)
for path in ("/dev/null", "/dev/kmsg"):
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        print(path, "ok")
    except OSError as e:
        print(path, e.errno)
"""


def test_cgroup2_device_rules_deny_devices_not_allowed() -> None:
    """cgroup v2 has no devices.* files: the allow-list must be enforced with an eBPF
    program, or a container root opens any device node it finds (e.g. one an image layer
    carries) even though v1 would refuse it."""
    import errno

    from runtime.rootfs import DEFAULT_DEVICE_RULES

    root = unified_root()
    if root is None:
        pytest.skip("no cgroup2 mount")
    os.close(os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK))  # allowed out here
    parent = f"/pycri-cg2dev-{os.getpid()}"
    cg = V2Cgroup(parent + "/ctr", root)
    cg.create()
    probe = subprocess.Popen(["python3", "-c", _DEVICE_PROBE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        cg.set_device_rules(list(DEFAULT_DEVICE_RULES))
        cg.set_device_rules(list(DEFAULT_DEVICE_RULES) + ["c 1:7 rwm"])  # replaces, no error
        cg.attach(probe.pid)
        out, _ = probe.communicate("g", timeout=20)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        V2Cgroup(parent, root).remove()
    assert out.split("\n")[:2] == ["/dev/null ok", f"/dev/kmsg {errno.EPERM}"], out


_FUSE_PROBE = """
import os, stat, sys, tempfile
d = tempfile.mkdtemp()
for name, minor in (("fuse", 229), ("loopctl", 237)):
    os.mknod(os.path.join(d, name), stat.S_IFCHR | 0o600, os.makedev(10, minor))
sys.stdin.read(1)
for name in ("fuse", "loopctl"):
    path = os.path.join(d, name)
    try:
        os.close(os.open(path, os.O_RDWR))
        print(name, "ok")
    except OSError as e:
        print(name, e.errno)
    os.unlink(path)
os.rmdir(d)
"""


def test_cgroup2_device_filter_allows_added_device_rules() -> None:
    """A rule added for a device (CDI deviceNodes: "c 10:229 rw") opens that device under the
    v2 eBPF filter, and only that one."""
    import errno

    from runtime.rootfs import DEFAULT_DEVICE_RULES

    root = unified_root()
    if root is None:
        pytest.skip("no cgroup2 mount")
    parent = f"/pycri-cg2cdi-{os.getpid()}"
    cg = V2Cgroup(parent + "/ctr", root)
    cg.create()
    probe = subprocess.Popen(["python3", "-c", _FUSE_PROBE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        cg.set_device_rules(list(DEFAULT_DEVICE_RULES) + ["c 10:229 rw"])
        cg.attach(probe.pid)
        out, _ = probe.communicate("g", timeout=20)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        V2Cgroup(parent, root).remove()
    assert out.split("\n")[:2] == ["fuse ok", f"loopctl {errno.EPERM}"], out


def test_fork_into_cgroup_starts_the_child_in_a_cgroup2_directory() -> None:
    """runtime.syscalls.fork_into_cgroup (clone3 CLONE_INTO_CGROUP) on this host's cgroup2
    hierarchy (v2, or hybrid's controller-less /sys/fs/cgroup/unified)."""
    from runtime import syscalls
    root = "/sys/fs/cgroup" if detect_mode() == "v2" else unified_root()
    if not root:
        pytest.fail("no cgroup2 hierarchy on this host (v1 only)")
    leaf = os.path.join(root, f"pycri-test-clone3-{os.getpid()}")
    os.mkdir(leaf)
    try:
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        r, w = os.pipe()
        try:
            pid = syscalls.fork_into_cgroup(fd)
            if pid == 0:
                try:
                    with open("/proc/self/cgroup") as f:
                        os.write(w, f.read().encode())
                finally:
                    os._exit(0)
            os.close(w)
            seen = os.read(r, 4096).decode()
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(r)
            os.close(fd)
        assert os.waitstatus_to_exitcode(status) == 0
        here = [ln[3:] for ln in seen.splitlines() if ln.startswith("0::")]
        assert here and here[0].endswith("/" + os.path.basename(leaf)), seen
        not_cgroup = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with pytest.raises(OSError) as e:  # not a cgroup2 directory: refused, no child
                syscalls.fork_into_cgroup(not_cgroup)
        finally:
            os.close(not_cgroup)
        assert "clone3" in str(e.value)
    finally:
        os.rmdir(leaf)
