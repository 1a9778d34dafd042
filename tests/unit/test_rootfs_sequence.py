"""The system calls runtime.rootfs (prepare/finish) and the init's namespace entry make for
representative specs, recorded by tests/support/fake_syscalls.py (no root, nothing mounted),
and what a failing call turns into. The real calls are exercised by
tests/integration/test_container_init.py."""
from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from pycri_common.errors import InvalidArgument
from runtime import container_init, rootfs
from runtime import syscalls as sc
from runtime.container_spec import ContainerSpec, Mount, bind_mount
from tests.support.fake_syscalls import RecordingSyscalls


class Box:
    """A container dir in tmp: lower/upper/work and the rootfs mount point (left empty: the
    overlay is not really mounted, so the mounts are created in the plain directory)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        for d in ("lower", "upper", "work"):
            (tmp / d).mkdir()
        self.root = str(tmp / "rootfs")

    def spec(self, **over: Any) -> ContainerSpec:
        raw: dict[str, Any] = {
            "id": "c1", "rootfs": {"lower": [str(self.tmp / "lower")],
                                   "upper": str(self.tmp / "upper"),
                                   "work": str(self.tmp / "work")},
            "process": {"args": ["sh"], "cwd": "/work/dir"}, "mounts": [],
        }
        for key, value in over.items():
            if key.startswith("rootfs_"):
                raw["rootfs"][key[len("rootfs_"):]] = value
            else:
                raw[key] = value
        return ContainerSpec.from_json(raw)

    def in_root(self, path: str) -> str:
        return self.root + path

    def run(self, spec: ContainerSpec, calls: RecordingSyscalls,
            host_cgroup_path: str | None = None) -> tuple[str, list[str]]:
        root, cwd, rules = rootfs.prepare(spec, host_cgroup_path, calls)
        assert root == self.root
        rootfs.finish(spec, root, calls)
        return cwd, rules


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path)


def _mounts(calls: RecordingSyscalls) -> list[tuple[Any, ...]]:
    return calls.named("mount", "umount2", "mount_setattr", "pivot_root")


def _tail_after_pivot(box: Box, calls: RecordingSyscalls) -> list[tuple[Any, ...]]:
    seq = _mounts(calls)
    first = seq.index(("pivot_root", ".", "."))
    return seq[first:]


PIVOT = [
    ("pivot_root", ".", "."),
    ("mount", None, ".", None, sc.MS_SLAVE | sc.MS_REC, None),
    ("umount2", ".", sc.MNT_DETACH),
]


def test_plain_container(box: Box) -> None:
    calls = RecordingSyscalls()
    cwd, rules = box.run(box.spec(mounts=[{"destination": "/proc", "type": "proc",
                                           "options": ["nosuid", "noexec", "nodev"]}]), calls)
    lower, upper, work = (str(box.tmp / d) for d in ("lower", "upper", "work"))
    assert _mounts(calls) == [
        ("mount", None, "/", None, sc.MS_REC | sc.MS_SLAVE, None),   # rslave: nothing leaks out
        ("mount", None, "/", None, sc.MS_PRIVATE, None),             # the mount holding rootfs
        ("mount", "overlay", box.root, "overlay", 0,
         f"lowerdir={lower},upperdir={upper},workdir={work}"),
        ("mount", "proc", box.in_root("/proc"), "proc", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV,
         None),
        *PIVOT,
    ]
    assert cwd == "/work/dir" and os.path.isdir(box.in_root("/work/dir"))
    assert rules == []
    assert calls.named("fchdir") == [("fchdir", box.root), ("fchdir", "/")]
    assert calls.named("chdir") == [("chdir", "/")]


def test_read_only_rootfs_is_remounted_last(box: Box) -> None:
    calls = RecordingSyscalls()
    box.run(box.spec(rootfs_readonly=True), calls)
    assert _tail_after_pivot(box, calls) == [
        *PIVOT,
        ("mount", None, box.root, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY, None),
    ]


def test_masked_and_readonly_paths_after_pivot(box: Box) -> None:
    os.makedirs(box.in_root("/proc/acpi"))
    Path(box.in_root("/proc/kcore")).touch()
    os.makedirs(box.in_root("/proc/sys"))
    calls = RecordingSyscalls()
    box.run(box.spec(masked_paths=["/proc/kcore", "/proc/acpi", "/proc/missing"],
                     readonly_paths=["/proc/sys", "/proc/nothere"]), calls)
    assert _tail_after_pivot(box, calls) == [
        *PIVOT,
        ("mount", "/dev/null", box.in_root("/proc/kcore"), None, sc.MS_BIND, None),  # a file
        ("mount", "tmpfs", box.in_root("/proc/acpi"), "tmpfs", sc.MS_RDONLY, "size=0k"),  # dir
        ("mount", box.in_root("/proc/sys"), box.in_root("/proc/sys"), None,
         sc.MS_BIND | sc.MS_REC, None),
        ("mount_setattr", box.in_root("/proc/sys"), sc.MOUNT_ATTR_RDONLY, 0, True),
    ]  # missing paths are skipped


def test_bind_mounts_with_propagation_and_readonly(box: Box) -> None:
    src = box.tmp / "vol"
    src.mkdir()
    (src / "file.txt").write_text("x")
    mounts = [bind_mount(str(src), "/rshared", propagation="rshared"),
              bind_mount(str(src), "/ro", readonly=True),
              bind_mount(str(src), "/rro", recursive_readonly=True),
              bind_mount(str(src / "file.txt"), "/etc/one.txt", propagation="rslave")]
    calls = RecordingSyscalls()
    box.run(box.spec(mounts=[m.to_json() for m in mounts]), calls)
    rec = sc.MS_BIND | sc.MS_REC
    seq = _mounts(calls)
    assert seq[0] == ("mount", None, "/", None, sc.MS_REC | sc.MS_SHARED, None)  # rshared asked
    assert seq[3:seq.index(PIVOT[0])] == [
        ("mount", str(src), box.in_root("/rshared"), None, rec, None),
        ("mount", None, box.in_root("/rshared"), None, sc.MS_SHARED | sc.MS_REC, None),
        ("mount", str(src), box.in_root("/ro"), None, rec, None),
        ("mount", None, box.in_root("/ro"), None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY,
         None),
        ("mount", str(src), box.in_root("/rro"), None, rec, None),
        ("mount", None, box.in_root("/rro"), None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY,
         None),
        ("mount_setattr", box.in_root("/rro"), sc.MOUNT_ATTR_RDONLY, 0, True),
        ("mount", str(src / "file.txt"), box.in_root("/etc/one.txt"), None, rec, None),
        ("mount", None, box.in_root("/etc/one.txt"), None, sc.MS_SLAVE | sc.MS_REC, None),
    ]
    assert os.path.isfile(box.in_root("/etc/one.txt"))  # a file source gets a file target


def test_propagation_needs_a_shared_source_mount(box: Box) -> None:
    src = box.tmp / "vol"
    src.mkdir()
    private = "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
    calls = RecordingSyscalls(mountinfo=private)
    spec = box.spec(mounts=[bind_mount(str(src), "/b", propagation="rshared").to_json()])
    with pytest.raises(InvalidArgument, match=r"mounts\[0\]: .* not a shared mount"):
        rootfs.prepare(spec, None, calls)
    assert calls.calls == []  # checked before anything is mounted


def test_dev_tmpfs_gets_nodes_symlinks_and_devices(box: Box) -> None:
    calls = RecordingSyscalls()
    dev = {"destination": "/dev", "type": "tmpfs", "options": ["nosuid", "mode=755"]}
    cwd, rules = box.run(box.spec(mounts=[dev], devices=[
        {"host_path": "/dev/null", "container_path": "/dev/xnull", "permissions": "rw"}]), calls)
    assert ("mount", "tmpfs", box.in_root("/dev"), "tmpfs", sc.MS_NOSUID, "mode=755") in calls.calls
    nodes = {c[1]: (stat.S_IFMT(c[2]), os.major(c[3]), os.minor(c[3]))
             for c in calls.named("mknod")}
    for name, (major, minor) in rootfs.DEFAULT_DEVICES.items():
        assert nodes[box.in_root("/dev/" + name)] == (stat.S_IFCHR, major, minor)
    assert nodes[box.in_root("/dev/xnull")] == (stat.S_IFCHR, 1, 3)
    links = {c[2]: c[1] for c in calls.named("symlink")}
    assert links[box.in_root("/dev/ptmx")] == "pts/ptmx"
    assert links[box.in_root("/dev/fd")] == "/proc/self/fd"
    assert ("chown", box.in_root("/dev/xnull"), 0, 0) in calls.calls
    assert rules == ["c 1:3 rw"]
    # nodes before pivot_root, in that order: defaults, then the requested devices
    order = [c[0] for c in calls.calls if c[0] in ("mknod", "pivot_root")]
    assert order[-1] == "pivot_root" and order.count("mknod") == len(rootfs.DEFAULT_DEVICES) + 1


def test_no_dev_nodes_without_a_dev_tmpfs(box: Box) -> None:
    calls = RecordingSyscalls()
    box.run(box.spec(), calls)
    assert calls.named("mknod", "symlink") == []


# --------------------------------------------------------------------------- failures

def test_failing_overlay_mount_names_the_rootfs(box: Box) -> None:
    calls = RecordingSyscalls()
    calls.fail("mount", match="overlay", err=errno.EINVAL)
    with pytest.raises(InvalidArgument, match=r"^rootfs: overlay mount on .* failed: "
                                              r".*Invalid argument"):
        rootfs.prepare(box.spec(), None, calls)
    assert not calls.named("pivot_root")


def test_failing_bind_mount_names_the_mount(box: Box) -> None:
    src = box.tmp / "vol"
    src.mkdir()
    calls = RecordingSyscalls()
    calls.fail("mount", match=str(src), err=errno.EACCES)
    spec = box.spec(mounts=[{"destination": "/proc", "type": "proc"},
                            bind_mount(str(src), "/data").to_json()])
    with pytest.raises(InvalidArgument, match=r"^mounts\[1\] \(bind on /data\): .*Permission "
                                              r"denied"):
        rootfs.prepare(spec, None, calls)


def test_recursive_readonly_without_mount_setattr(box: Box) -> None:
    src = box.tmp / "vol"
    src.mkdir()
    calls = RecordingSyscalls()
    calls.fail("mount_setattr", err=errno.ENOSYS)
    spec = box.spec(mounts=[bind_mount(str(src), "/rro", recursive_readonly=True).to_json()])
    with pytest.raises(InvalidArgument, match=r"mounts\[0\]\.recursive_readonly: .*Linux >= 5.12"):
        rootfs.prepare(spec, None, calls)


def test_failing_mask_names_the_path(box: Box) -> None:
    Path(box.in_root("/")).mkdir(exist_ok=True)
    os.makedirs(box.in_root("/proc"))
    Path(box.in_root("/proc/kcore")).touch()
    calls = RecordingSyscalls()
    calls.fail("mount", match="/dev/null")
    with pytest.raises(InvalidArgument, match=r"^masked_paths\[0\]: /proc/kcore: "):
        box.run(box.spec(masked_paths=["/proc/kcore"]), calls)


def test_sysfs_refused_falls_back_to_binding_the_hosts(box: Box) -> None:
    calls = RecordingSyscalls()
    calls.fail("mount", match="sysfs", err=errno.EPERM, times=1)
    sysfs = Mount("/sys", "sysfs", "sysfs", ("nosuid", "ro"), readonly=True)
    box.run(box.spec(mounts=[sysfs.to_json()]), calls)
    target = box.in_root("/sys")
    assert _mounts(calls)[3:7] == [
        ("mount", "sysfs", target, "sysfs", sc.MS_NOSUID | sc.MS_RDONLY, None),  # refused
        ("mount", "/sys", target, None, sc.MS_BIND | sc.MS_REC, None),
        ("mount", None, target, None, sc.MS_REMOUNT | sc.MS_NOSUID | sc.MS_RDONLY | sc.MS_BIND,
         None),
        ("mount_setattr", target, sc.MOUNT_ATTR_RDONLY, 0, True),
    ]


def test_pivot_root_on_a_shared_root_retries_after_making_it_private(box: Box) -> None:
    calls = RecordingSyscalls()
    calls.fail("pivot_root", err=errno.EINVAL, times=1)
    box.run(box.spec(), calls)
    assert _tail_after_pivot(box, calls) == [
        ("pivot_root", ".", "."),
        ("mount", None, "/", None, sc.MS_PRIVATE, None),
        *PIVOT,
    ]


def test_failing_pivot_root_is_raised(box: Box) -> None:
    calls = RecordingSyscalls()
    calls.fail("pivot_root", err=errno.EBUSY)
    with pytest.raises(OSError, match="Device or resource busy"):
        box.run(box.spec(), calls)


# --------------------------------------------------------------------------- namespaces

def test_namespace_entry_order(box: Box) -> None:
    spec = box.spec(hostname="web", namespaces=[
        {"type": "network", "path": "/run/ns/net"}, {"type": "ipc"}, {"type": "uts"},
        {"type": "mount"}, {"type": "cgroup"}])
    r, w = os.pipe()
    try:
        calls = RecordingSyscalls()
        container_init._enter_namespaces(spec, container_init._Reporter(w), calls)
        assert calls.calls == [
            ("setns", "/run/ns/net", sc.CLONE_NEWNET),
            ("unshare", sc.CLONE_NEWIPC | sc.CLONE_NEWUTS),
            ("unshare", sc.CLONE_NEWNS | sc.CLONE_NEWCGROUP),  # cgroup ns after the cgroup
            ("sethostname", "web"),
        ]
        assert os.read(r, 100) == f'{{"pid": {os.getpid()}}}\n'.encode()
    finally:
        os.close(r)
        os.close(w)


def test_failing_setns_names_the_namespace(box: Box) -> None:
    spec = box.spec(namespaces=[{"type": "network", "path": "/run/ns/gone"}])
    calls = RecordingSyscalls()
    calls.fail("setns", err=errno.EINVAL)
    with pytest.raises(InvalidArgument, match=r"namespaces\[network\]\.path: cannot join "
                                              r"/run/ns/gone: .*Invalid argument"):
        container_init._enter_namespaces(spec, container_init._Reporter(-1), calls)


def test_typed_devices_are_made_from_their_numbers(box: Box) -> None:
    """CDI device nodes: no host node is read; type/major/minor/mode/owner come from the spec,
    a FIFO and permissions "" add no devices-cgroup rule."""
    calls = RecordingSyscalls()
    typed = {"host_path": "/nonexistent/gpu0", "container_path": "/dev/gpu0",
             "permissions": "rw", "type": "c", "major": 195, "minor": 7, "file_mode": 0o660,
             "uid": 5, "gid": 6}
    fifo = {**typed, "container_path": "/dev/pipe", "type": "p", "permissions": ""}
    silent = {**typed, "container_path": "/dev/gpu1", "minor": 8, "permissions": ""}
    cwd, rules = box.run(box.spec(devices=[typed, fifo, silent]), calls)
    nodes = {c[1]: (stat.S_IFMT(c[2]), stat.S_IMODE(c[2]), c[3]) for c in calls.named("mknod")}
    assert nodes[box.in_root("/dev/gpu0")] == (stat.S_IFCHR, 0o660, os.makedev(195, 7))
    assert nodes[box.in_root("/dev/pipe")] == (stat.S_IFIFO, 0o660, 0)
    assert ("chown", box.in_root("/dev/gpu0"), 5, 6) in calls.calls
    assert rules == ["c 195:7 rw"]
    calls = RecordingSyscalls()
    calls.fail("mknod", box.in_root("/dev/gpu0"))
    with pytest.raises(InvalidArgument, match=re.escape("devices[0]: mknod /dev/gpu0")):
        box.run(box.spec(devices=[typed]), calls)
