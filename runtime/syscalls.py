"""Linux syscalls Python 3.11's os module lacks, via ctypes.

Every wrapper raises OSError(errno, "<call>(<args>): <strerror>") on failure so
the caller's error message says which call failed on what. This module imports
only stdlib modules that the shim and zygote already load (ctypes, os, struct),
so it is cheap to import in forked children. Add functions, never rename.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from collections.abc import Iterator

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

# --- clone / namespace flags -------------------------------------------------
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

#: /proc/<pid>/ns/<name> -> clone flag
NAMESPACE_FLAGS: dict[str, int] = {
    "mnt": CLONE_NEWNS,
    "cgroup": CLONE_NEWCGROUP,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "net": CLONE_NEWNET,
    "time": CLONE_NEWTIME,
}

# --- mount flags --------------------------------------------------------------
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_POSIXACL = 0x10000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

# --- prctl options -------------------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

# --- syscall numbers for calls libc may not wrap ----------------------------
_MACHINE = platform.machine()
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"pivot_root": 155, "capget": 125, "capset": 126, "clone3": 435,
               "pidfd_getfd": 438},
    "aarch64": {"pivot_root": 41, "capget": 90, "capset": 91, "clone3": 435,
                "pidfd_getfd": 438},
}

_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int


def _fs(path: str | bytes | None) -> bytes | None:
    if path is None:
        return None
    return os.fsencode(path)


def _raise(call: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{call}: {os.strerror(err)}")


def _syscall_number(name: str) -> int:
    try:
        return _SYSCALLS[_MACHINE][name]
    except KeyError:
        raise OSError(38, f"{name}: no syscall number known for {_MACHINE}") from None


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2). Raises OSError naming source, target and fstype."""
    if _libc.mount(_fs(source), _fs(target), _fs(fstype), flags, _fs(data)) != 0:
        _raise(f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})")


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    if _libc.umount2(_fs(target), flags) != 0:
        _raise(f"umount2({target!r}, {flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace open at fd (nstype 0 = any type)."""
    if _libc.setns(fd, nstype) != 0:
        _raise(f"setns(fd={fd}, {nstype:#x})")


def setns_path(path: str, nstype: int = 0) -> None:
    """Open a namespace file (e.g. /proc/<pid>/ns/net or a pinned file) and join it."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, nstype) != 0:
            _raise(f"setns({path!r}, {nstype:#x})")
    finally:
        os.close(fd)


def unshare(flags: int) -> None:
    """unshare(2)."""
    if _libc.unshare(flags) != 0:
        _raise(f"unshare({flags:#x})")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) (no libc wrapper; raw syscall)."""
    nr = _syscall_number("pivot_root")
    if _libc.syscall(ctypes.c_long(nr), ctypes.c_char_p(_fs(new_root)),
                     ctypes.c_char_p(_fs(put_old))) != 0:
        _raise(f"pivot_root({new_root!r}, {put_old!r})")


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """pidfd_getfd(2) (Linux >= 5.6): a copy, in this process, of fd `target_fd` of the
    process `pidfd` names (close-on-exec; the same open file description)."""
    nr = _syscall_number("pidfd_getfd")
    fd = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(pidfd), ctypes.c_int(target_fd),
                       ctypes.c_uint(0))
    if fd < 0:
        _raise(f"pidfd_getfd(pidfd {pidfd}, fd {target_fd})")
    return int(fd)


SPLICE_F_NONBLOCK = 0x02
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
_libc.tee.restype = ctypes.c_ssize_t


def tee(fd_in: int, fd_out: int, length: int, flags: int = SPLICE_F_NONBLOCK) -> int:
    """tee(2): copy up to `length` bytes from pipe fd_in to pipe fd_out without consuming
    them; 0 at EOF. BlockingIOError when fd_in is empty (or fd_out full) with
    SPLICE_F_NONBLOCK."""
    n = _libc.tee(fd_in, fd_out, length, flags)
    if n < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"tee: {os.strerror(err)}") if err != errno.EAGAIN else \
            BlockingIOError(err, "tee: no data")
    return int(n)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2); returns the call's result (some options return a value)."""
    res = _libc.prctl(option, arg2, arg3, arg4, arg5)
    if res < 0:
        _raise(f"prctl({option}, {arg2}, {arg3}, {arg4}, {arg5})")
    return int(res)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def load_seccomp_program(program: bytes) -> None:
    """Install a classic-BPF seccomp filter (struct sock_filter[] as bytes, 8 bytes each) on
    this thread: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER), flags none - what libseccomp's
    seccomp_load does with the attributes runtime.seccomp leaves at their defaults. Needs
    no_new_privs or CAP_SYS_ADMIN."""
    if not program or len(program) % 8:
        raise ValueError(f"a seccomp program is a non-empty array of 8-byte instructions, "
                         f"got {len(program)} bytes")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        _raise("prctl(PR_SET_SECCOMP)")


def set_child_subreaper(on: bool = True) -> None:
    """Orphaned descendants are re-parented to this process instead of PID 1."""
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def is_child_subreaper() -> bool:
    val = ctypes.c_int(0)
    if _libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.cast(ctypes.pointer(val), ctypes.c_void_p).value
                   or 0, 0, 0, 0) != 0:
        _raise("prctl(PR_GET_CHILD_SUBREAPER)")
    return bool(val.value)


def reaped_children() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of every child that has exited, reaped without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status


def reap_children() -> None:
    """Collects every child that has exited, without blocking; their statuses are dropped."""
    for _ in reaped_children():
        pass


def set_pdeathsig(sig: int) -> None:
    """Deliver signal `sig` to this process when its parent thread dies (0 clears)."""
    prctl(PR_SET_PDEATHSIG, sig)


def set_no_new_privs() -> None:
    """execve can no longer grant privileges (setuid bits, file caps)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    return bool(prctl(PR_GET_NO_NEW_PRIVS))


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, 1 if on else 0)


def set_process_name(name: str) -> None:
    """PR_SET_NAME: the comm shown by ps/top (15 bytes max)."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    if _libc.prctl(PR_SET_NAME, ctypes.cast(buf, ctypes.c_void_p).value or 0, 0, 0, 0) != 0:
        _raise(f"prctl(PR_SET_NAME, {name!r})")


def sethostname(name: str) -> None:
    """sethostname(2) in the current UTS namespace."""
    raw = name.encode()
    if _libc.sethostname(raw, len(raw)) != 0:
        _raise(f"sethostname({name!r})")


def setdomainname(name: str) -> None:
    raw = name.encode()
    if _libc.setdomainname(raw, len(raw)) != 0:
        _raise(f"setdomainname({name!r})")


# --- capabilities (capget/capset, version 3: two 32-bit words per set) --------
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class CapSets:
    """The three per-thread capability sets as 64-bit masks."""

    __slots__ = ("effective", "inheritable", "permitted")

    def __init__(self, effective: int, permitted: int, inheritable: int) -> None:
        self.effective = effective
        self.permitted = permitted
        self.inheritable = inheritable

    def __repr__(self) -> str:
        return (f"CapSets(effective={self.effective:#x}, permitted={self.permitted:#x}, "
                f"inheritable={self.inheritable:#x})")


def capget(pid: int = 0) -> CapSets:
    """capget(2) for `pid` (0 = this thread)."""
    header = ctypes.create_string_buffer(struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, pid), 8)
    data = ctypes.create_string_buffer(24)
    nr = _syscall_number("capget")
    if _libc.syscall(ctypes.c_long(nr), header, data) != 0:
        _raise(f"capget(pid={pid})")
    e0, p0, i0, e1, p1, i1 = struct.unpack("6I", data.raw)
    return CapSets(e0 | (e1 << 32), p0 | (p1 << 32), i0 | (i1 << 32))


def capset(caps: CapSets) -> None:
    """capset(2) for this thread."""
    header = ctypes.create_string_buffer(struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0), 8)
    low = 0xFFFFFFFF
    data = ctypes.create_string_buffer(struct.pack(
        "6I",
        caps.effective & low, caps.permitted & low, caps.inheritable & low,
        caps.effective >> 32, caps.permitted >> 32, caps.inheritable >> 32), 24)
    nr = _syscall_number("capset")
    if _libc.syscall(ctypes.c_long(nr), header, data) != 0:
        _raise(f"capset({caps!r})")


# --- mount_setattr ---------------------------------------------------------------
# Same number on x86_64 and aarch64 (syscalls added after 5.x share one table).
_NR_MOUNT_SETATTR = 442
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008
MOUNT_ATTR_IDMAP = 0x00100000


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, recursive: bool = True,
                  dirfd: int = -100, userns_fd: int = 0) -> None:
    """mount_setattr(2) on `path` (relative to dirfd, default AT_FDCWD; "" = dirfd itself); with
    `recursive` the change applies to every mount below too (MOUNT_ATTR_RDONLY: recursive ro).
    MOUNT_ATTR_IDMAP takes the user namespace whose mappings the mount gets in `userns_fd`
    (only on a detached mount made by open_tree(OPEN_TREE_CLONE) that was never attached)."""
    attr = struct.pack("QQQQ", attr_set, attr_clr, 0, userns_fd)
    buf = ctypes.create_string_buffer(attr, len(attr))
    flags = (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if path == "" else 0)
    if _libc.syscall(ctypes.c_long(_NR_MOUNT_SETATTR), ctypes.c_int(dirfd),
                     ctypes.c_char_p(_fs(path)), ctypes.c_uint(flags), buf,
                     ctypes.c_size_t(len(attr))) != 0:
        _raise(f"mount_setattr({path!r}, set={attr_set:#x}, clr={attr_clr:#x}, "
               f"recursive={recursive})")


# --- detached mounts: open_tree / move_mount (Linux 5.2) ----------------------------------
_NR_OPEN_TREE = 428
_NR_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC,
              recursive: bool = False, dirfd: int = -100) -> int:
    """open_tree(2): an fd of a (with OPEN_TREE_CLONE: detached copy of the) mount at `path`
    ("" = dirfd itself); `recursive` copies the mounts below it too."""
    flags |= (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if path == "" else 0)
    fd = _libc.syscall(ctypes.c_long(_NR_OPEN_TREE), ctypes.c_int(dirfd),
                       ctypes.c_char_p(_fs(path)), ctypes.c_uint(flags))
    if fd < 0:
        _raise(f"open_tree({path!r}, {flags:#x})")
    return int(fd)


def move_mount(from_fd: int, to_path: str, to_dirfd: int = -100) -> None:
    """move_mount(2): attach the detached mount `from_fd` at `to_path` (relative to to_dirfd;
    "" = to_dirfd itself)."""
    flags = MOVE_MOUNT_F_EMPTY_PATH | (MOVE_MOUNT_T_EMPTY_PATH if to_path == "" else 0)
    if _libc.syscall(ctypes.c_long(_NR_MOVE_MOUNT), ctypes.c_int(from_fd), ctypes.c_char_p(b""),
                     ctypes.c_int(to_dirfd), ctypes.c_char_p(_fs(to_path)),
                     ctypes.c_uint(flags)) != 0:
        _raise(f"move_mount(fd={from_fd}, {to_path!r})")


def bind_idmapped(source: str, userns_fd: int, to_dirfd: int, to_path: str = "",
                  recursive: bool = True) -> None:
    """Bind `source` on `to_path` (relative to to_dirfd; "" = to_dirfd itself) through the
    maps of the user namespace `userns_fd`: a detached copy (open_tree OPEN_TREE_CLONE), made
    idmapped (mount_setattr MOUNT_ATTR_IDMAP), attached (move_mount). Recursively when every
    submount allows it, else only the mount itself."""
    def once(rec: bool) -> None:
        fd = open_tree(source, recursive=rec)
        try:
            mount_setattr("", MOUNT_ATTR_IDMAP, recursive=rec, dirfd=fd, userns_fd=userns_fd)
            move_mount(fd, to_path, to_dirfd)
        finally:
            os.close(fd)

    try:
        once(recursive)
    except OSError:
        if not recursive:
            raise
        once(False)


def raise_effective_caps() -> None:
    """Effective capabilities := permitted (after setfsuid dropped the file ones)."""
    caps = capget()
    caps.effective = caps.permitted
    capset(caps)


def setfsuid(uid: int) -> int:
    """setfsuid(2): the uid file operations use (owner of new files); returns the old one.
    Leaving fsuid 0 drops the file capabilities from the effective set (re-raise them with
    capset from the permitted set)."""
    return int(_libc.setfsuid(ctypes.c_uint(uid)))


def setfsgid(gid: int) -> int:
    """setfsgid(2): the gid of new files; returns the old one."""
    return int(_libc.setfsgid(ctypes.c_uint(gid)))


def release_free_heap() -> None:
    """malloc_trim(0): give the heap's free pages back to the kernel (glibc only).

    A forked process inherits its parent's heap; pages freed after the fork stay
    counted against it until trimmed. Best effort: a no-op where unsupported.
    """
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


class Syscalls:
    """The calls that build a container's filesystem and enter its namespaces, as one object.

    runtime.rootfs and runtime.container_init make these calls through a Syscalls passed in
    (default: this real one, which calls the functions above and os); unit tests pass a
    recording double (tests/support/fake_syscalls.py) to assert the sequence without root and
    to make chosen calls fail. Everything else they do (opening and creating files below the
    rootfs, stat) is plain file-system access and stays real.
    """

    # -- mounts ------------------------------------------------------------------------------
    def mount(self, source: str | None, target: str, fstype: str | None = None,
              flags: int = 0, data: str | None = None) -> None:
        mount(source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        umount2(target, flags)

    def mount_setattr(self, path: str, attr_set: int, attr_clr: int = 0,
                      recursive: bool = True, dirfd: int = -100) -> None:
        mount_setattr(path, attr_set, attr_clr, recursive, dirfd)

    def mountinfo(self) -> str:
        """/proc/self/mountinfo: the mount table the propagation checks read."""
        with open("/proc/self/mountinfo") as f:
            return f.read()

    def pivot_root(self, new_root: str, put_old: str) -> None:
        pivot_root(new_root, put_old)

    def root_after_pivot(self, new_root: str) -> str:
        """Where the new root is seen once rootfs.pivot_root(new_root) is done: "/"."""
        return "/"

    # -- nodes and directories ------------------------------------------------------------------
    def mknod(self, name: str, mode: int, device: int, dir_fd: int) -> None:
        os.mknod(name, mode, device, dir_fd=dir_fd)

    def symlink(self, target: str, name: str, dir_fd: int | None = None) -> None:
        os.symlink(target, name, dir_fd=dir_fd)

    def chown(self, name: str, uid: int, gid: int, dir_fd: int) -> None:
        os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)

    def unlink(self, name: str, dir_fd: int) -> None:
        os.unlink(name, dir_fd=dir_fd)

    def chdir(self, path: str) -> None:
        os.chdir(path)

    def fchdir(self, fd: int) -> None:
        os.fchdir(fd)

    # -- namespaces and the process ----------------------------------------------------------
    def unshare(self, flags: int) -> None:
        unshare(flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        setns(fd, nstype)

    def setns_path(self, path: str, nstype: int = 0) -> None:
        setns_path(path, nstype)

    def sethostname(self, name: str) -> None:
        sethostname(name)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0,
              arg5: int = 0) -> int:
        return prctl(option, arg2, arg3, arg4, arg5)

    def set_no_new_privs(self) -> None:
        set_no_new_privs()

    # -- pod user namespaces -----------------------------------------------------------------
    def bind_idmapped(self, source: str, userns_fd: int, to_dirfd: int, to_path: str = "",
                      recursive: bool = True) -> None:
        bind_idmapped(source, userns_fd, to_dirfd, to_path, recursive)

    def setfsuid(self, uid: int) -> int:
        return setfsuid(uid)

    def setfsgid(self, gid: int) -> int:
        return setfsgid(gid)

    def raise_effective_caps(self) -> None:
        raise_effective_caps()


#: the real calls (what production code passes)
REAL = Syscalls()


# --- clone3 -------------------------------------------------------------------
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17
_CLONE_ARGS = struct.Struct("=11Q")  # struct clone_args up to .cgroup (CLONE_ARGS_SIZE_VER2)
# The call keeps the GIL (a PyDLL function): the child must come back holding it.
_libc_gil = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc_gil.syscall.restype = ctypes.c_long


def fork_into_cgroup(cgroup_fd: int) -> int:
    """fork(), the child starting in the cgroup v2 directory `cgroup_fd` (clone3 with
    CLONE_INTO_CGROUP, Linux >= 5.7): no cgroup.procs write, no migration. Returns 0 in the
    child, its pid in the parent. Unlike os.fork() it runs no at-fork handlers, so only a
    single-threaded process may call it (runtime.shim.spawn checks), and the child must not
    rely on at-fork state: the shim's exec child runs container_init.exec_into (setns,
    seccomp, rlimits) and execs or _exits."""
    args = ctypes.create_string_buffer(_CLONE_ARGS.pack(
        CLONE_INTO_CGROUP, 0, 0, 0, _SIGCHLD, 0, 0, 0, 0, 0, cgroup_fd), _CLONE_ARGS.size)
    pid = _libc_gil.syscall(ctypes.c_long(_syscall_number("clone3")), args,
                            ctypes.c_size_t(_CLONE_ARGS.size))
    if pid < 0:
        _raise(f"clone3(CLONE_INTO_CGROUP, cgroup fd {cgroup_fd})")
    return int(pid)
