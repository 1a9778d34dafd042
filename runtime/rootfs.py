"""Build the container's filesystem inside its own (new) mount namespace, then pivot_root.

Called by the container init after unshare(CLONE_NEWNS); nothing here is visible on the host
except through bind mounts with rshared propagation, which is the point of those.

Sequence (ContainerSpec fields in brackets):
  set_root_propagation   rslave for "/" (rshared if any mount asks for it) [mounts.propagation]
  mount_rootfs           overlay lower/upper/work on rootfs.mountpoint [rootfs]
  apply_mounts           every mount in order, destinations resolved inside the rootfs
                         [mounts] (a mount with sub_path: mounted on a private staging
                         dir, only sub_path bound on the destination);
                         /dev nodes + symlinks when /dev is a tmpfs; [devices]
  prepare_cwd            create the working dir (resolved inside the rootfs) [process.cwd]
  pivot_root
  mask_paths / readonly_paths / remount_root_readonly   [masked_paths, readonly_paths,
                                                          rootfs.readonly]
prepare() runs the steps before pivot_root, finish() the rest (the init sets the devices
cgroup rules in between, while the host's /sys/fs/cgroup is still reachable).
Errors are InvalidArgument naming the spec field (mounts[3].source: ...).
Every mount, pivot_root, mknod, symlink and chdir goes through a runtime.syscalls.Syscalls
(`calls`, default the real one), so unit tests can record and fail them.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence

from pycri_common.errors import InvalidArgument
from runtime import syscalls, userns
from runtime.cgroups import mode as cgmode
from runtime.container_spec import ContainerSpec, Device, Mount, RootfsSpec
from runtime.securejoin import (
    ensure_file_in_root,
    mkdir_all_in_root,
    open_parent_in_root,
    open_path_in_root,
    relative_in_root,
    secure_join,
)
from runtime.syscalls import REAL, Syscalls

_FLAG_WORDS: dict[str, tuple[bool, int]] = {
    "ro": (False, syscalls.MS_RDONLY), "rw": (True, syscalls.MS_RDONLY),
    "nosuid": (False, syscalls.MS_NOSUID), "suid": (True, syscalls.MS_NOSUID),
    "nodev": (False, syscalls.MS_NODEV), "dev": (True, syscalls.MS_NODEV),
    "noexec": (False, syscalls.MS_NOEXEC), "exec": (True, syscalls.MS_NOEXEC),
    "sync": (False, syscalls.MS_SYNCHRONOUS), "async": (True, syscalls.MS_SYNCHRONOUS),
    "dirsync": (False, syscalls.MS_DIRSYNC),
    "noatime": (False, syscalls.MS_NOATIME), "atime": (True, syscalls.MS_NOATIME),
    "nodiratime": (False, syscalls.MS_NODIRATIME), "diratime": (True, syscalls.MS_NODIRATIME),
    "relatime": (False, syscalls.MS_RELATIME), "norelatime": (True, syscalls.MS_RELATIME),
    "strictatime": (False, syscalls.MS_STRICTATIME),
    "nostrictatime": (True, syscalls.MS_STRICTATIME),
    "bind": (False, syscalls.MS_BIND), "rbind": (False, syscalls.MS_BIND | syscalls.MS_REC),
}
_PROPAGATION_WORDS: dict[str, int] = {
    "private": syscalls.MS_PRIVATE, "rprivate": syscalls.MS_PRIVATE | syscalls.MS_REC,
    "slave": syscalls.MS_SLAVE, "rslave": syscalls.MS_SLAVE | syscalls.MS_REC,
    "shared": syscalls.MS_SHARED, "rshared": syscalls.MS_SHARED | syscalls.MS_REC,
    "unbindable": syscalls.MS_UNBINDABLE,
    "runbindable": syscalls.MS_UNBINDABLE | syscalls.MS_REC,
}
_IGNORED_WORDS = {"defaults", "tmpcopyup", "nofail", "auto", "noauto", "user", "nouser"}

#: Device nodes every container gets on its /dev tmpfs: name -> (major, minor).
DEFAULT_DEVICES: dict[str, tuple[int, int]] = {
    "null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9),
    "tty": (5, 0),
}
DEFAULT_DEV_SYMLINKS: dict[str, str] = {
    "ptmx": "pts/ptmx", "fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "core": "/proc/kcore",
}
#: devices cgroup (v1) allow-list for unprivileged containers (default nodes, pts, tun).
DEFAULT_DEVICE_RULES: tuple[str, ...] = (
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
    "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
)


def prepare(spec: ContainerSpec, host_cgroup_path: str | None,
            calls: Syscalls = REAL, idmap: userns.Idmap | None = None
            ) -> tuple[str, str, list[str]]:
    """Up to pivot_root: propagation, overlay, mounts, /dev nodes, devices, working dir.
    Returns (the rootfs mount point, the working dir inside it, devices-cgroup rules).
    With `idmap` (a pod user namespace): idmapped layers and binds, and what is created from
    the mounts on belongs to the container's root (_files_as_mapped_root)."""
    check_propagation_sources(spec.mounts, calls)
    set_root_propagation(spec.mounts, spec.rootfs.mountpoint, calls)
    root = mount_rootfs(spec.rootfs, calls, idmap)
    with _files_as_mapped_root(idmap, calls):
        apply_mounts(root, spec.mounts, spec.privileged, host_cgroup_path, calls, idmap)
        if dev_is_tmpfs(spec.mounts):
            create_default_devices(root, calls)
        rules = create_devices(root, spec.devices, calls)
        return root, prepare_cwd(root, spec.process.cwd), rules


@contextlib.contextmanager
def _files_as_mapped_root(idmap: userns.Idmap | None, calls: Syscalls) -> Iterator[None]:
    """While the init builds the filesystem for a pod user namespace, what it creates (mount
    points, the working dir, /dev nodes) belongs to the container's root: fsuid/fsgid are the
    mapped root's, the file capabilities that drops are raised again (host root keeps its
    privileges otherwise)."""
    if idmap is None:
        yield
        return
    calls.setfsgid(idmap.root_gid)
    calls.setfsuid(idmap.root_uid)
    try:
        calls.raise_effective_caps()
        yield
    finally:
        calls.setfsuid(0)
        calls.setfsgid(0)


def finish(spec: ContainerSpec, root: str, calls: Syscalls = REAL) -> None:
    """pivot_root into `root`, then masked and read-only paths and the read-only root."""
    new_root = pivot_root(root, calls)
    mask_paths(spec.masked_paths, new_root, calls)
    readonly_paths(spec.readonly_paths, new_root, calls)
    if spec.rootfs.readonly:
        remount_root_readonly(new_root, calls)


def parse_options(options: Sequence[str]) -> tuple[int, int, str]:
    """mount(8)-style words -> (flags, propagation flags, data string)."""
    flags = 0
    prop = 0
    data: list[str] = []
    for word in options:
        if word in _FLAG_WORDS:
            clear, bit = _FLAG_WORDS[word]
            flags = (flags & ~bit) if clear else (flags | bit)
        elif word in _PROPAGATION_WORDS:
            prop = _PROPAGATION_WORDS[word]
        elif word in _IGNORED_WORDS:
            continue
        else:
            data.append(word)
    return flags, prop, ",".join(data)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


# --------------------------------------------------------------------------- propagation

def _mountinfo(calls: Syscalls) -> list[tuple[str, list[str]]]:
    """[(mount point, optional fields)] from /proc/self/mountinfo."""
    out = []
    for line in calls.mountinfo().splitlines():
        parts = line.split()
        sep = parts.index("-")
        out.append((parts[4].replace("\\040", " "), parts[6:sep]))
    return out


def _mount_of(path: str, info: list[tuple[str, list[str]]]) -> tuple[str, list[str]]:
    best: tuple[str, list[str]] = ("/", [])
    for mp, opt in info:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
            best = (mp, opt)
    return best


def check_propagation_sources(mounts: Sequence[Mount], calls: Syscalls = REAL) -> None:
    """Like containerd: rshared needs a shared source mount, rslave a shared or slave one.
    Must run before set_root_propagation (which turns our copies into slaves)."""
    info: list[tuple[str, list[str]]] | None = None
    for i, m in enumerate(mounts):
        prop = m.propagation
        if m.type != "bind" or prop not in ("rshared", "rslave"):
            continue
        info = info if info is not None else _mountinfo(calls)
        src = os.path.realpath(m.source)
        mp, opt = _mount_of(src, info)
        shared = any(o.startswith("shared:") for o in opt)
        slave = any(o.startswith("master:") for o in opt)
        if prop == "rshared" and not shared:
            raise InvalidArgument(f"mounts[{i}]: path {src!r} is mounted on {mp!r} but it is "
                                  "not a shared mount (needed for bidirectional propagation)")
        if prop == "rslave" and not (shared or slave):
            raise InvalidArgument(f"mounts[{i}]: path {src!r} is mounted on {mp!r} but it is "
                                  "not a shared or slave mount (needed for host-to-container "
                                  "propagation)")


def set_root_propagation(mounts: Sequence[Mount], rootfs_mountpoint: str,
                         calls: Syscalls = REAL) -> None:
    """rslave for everything (rshared when a mount is bidirectional), then make the mount that
    holds the rootfs mountpoint private so the overlay and everything under it never
    propagates back to the host."""
    any_shared = any(m.propagation == "rshared" for m in mounts)
    flag = syscalls.MS_SHARED if any_shared else syscalls.MS_SLAVE
    calls.mount(None, "/", None, syscalls.MS_REC | flag)
    parent, _ = _mount_of(os.path.realpath(rootfs_mountpoint), _mountinfo(calls))
    calls.mount(None, parent, None, syscalls.MS_PRIVATE)


# --------------------------------------------------------------------------- rootfs

def mount_rootfs(rootfs: RootfsSpec, calls: Syscalls = REAL,
                 idmap: userns.Idmap | None = None) -> str:
    """Mount the overlay on rootfs.mountpoint (created if missing). Returns it.

    With `idmap` (a pod user namespace) every image layer is an idmapped copy (the shared
    snapshots are never chowned) and the writable layer belongs to the mapped root."""
    target = rootfs.mountpoint
    for key, path in (("upper", rootfs.upper), ("work", rootfs.work)):
        if not os.path.isdir(path):
            raise InvalidArgument(f"rootfs.{key}: {path} is not a directory")
    for i, d in enumerate(rootfs.lower):
        if not os.path.isdir(d):
            raise InvalidArgument(f"rootfs.lower[{i}]: {d} is not a directory")
    os.makedirs(target, mode=0o755, exist_ok=True)
    if idmap is not None:
        os.chown(rootfs.upper, idmap.root_uid, idmap.root_gid)
    upper = f"upperdir={rootfs.upper},workdir={rootfs.work}"
    with _idmapped_layers(calls, list(rootfs.lower), target + ".idmap", idmap,
                          "rootfs") as lower:
        data = f"lowerdir={':'.join(lower)},{upper}"
        if len(data) >= 4096:
            raise InvalidArgument(f"rootfs: overlay options are {len(data)} bytes (limit "
                                  "4095): use shorter snapshot paths")
        try:
            calls.mount("overlay", target, "overlay", 0, data)
        except OSError as e:
            raise InvalidArgument(f"rootfs: overlay mount on {target} failed: "
                                  f"{e.strerror}") from e
    return target


@contextlib.contextmanager
def _idmapped_layers(calls: Syscalls, lower: list[str], staging: str,
                     idmap: userns.Idmap | None, field: str) -> Iterator[list[str]]:
    """Yields the lower dirs to give overlayfs: `lower` itself without idmap; else idmapped
    copies 0, 1, ... on a tmpfs at `staging` (private to this mount namespace), named
    relative to it (the working directory meanwhile: short overlay options). Overlayfs
    keeps its own references to its layers, so the copies are detached afterwards."""
    if idmap is None:
        yield lower
        return
    os.makedirs(staging, mode=0o700, exist_ok=True)
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        calls.mount("tmpfs", staging, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV,
                    "size=16k,mode=0700")
        try:
            for i, d in enumerate(lower):
                layer = os.path.join(staging, str(i))
                os.mkdir(layer)
                fd = os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    calls.bind_idmapped(d, idmap.fd, fd, recursive=False)
                except OSError as e:
                    raise InvalidArgument(f"{field}: layer {d} cannot be idmapped for the pod's "
                                          f"user namespace: {e.strerror}") from e
                finally:
                    os.close(fd)
            calls.chdir(staging)
            yield [str(i) for i in range(len(lower))]
        finally:
            calls.fchdir(cwd)
            calls.umount2(staging, syscalls.MNT_DETACH)
    finally:
        os.close(cwd)
        with contextlib.suppress(OSError):
            os.rmdir(staging)


# --------------------------------------------------------------------------- mounts

def apply_mounts(root: str, mounts: Sequence[Mount], privileged: bool,
                 host_cgroup_path: str | None = None, calls: Syscalls = REAL,
                 idmap: userns.Idmap | None = None) -> None:
    """Every mount in order. `host_cgroup_path`: the container's cgroup when it shares the
    host's cgroup namespace; "cgroup" mounts then bind that cgroup's own directories (as runc
    does) instead of exposing the whole hierarchy. `idmap` (a pod user namespace): binds and
    overlay layers are idmapped, tmpfs/devpts/mqueue uid=/gid= options are container IDs
    (a tmpfs without them belongs to the container's root)."""
    for i, m in enumerate(mounts):
        field = f"mounts[{i}]"
        try:
            _apply_mount(calls, root, m, privileged, field, host_cgroup_path, idmap)
        except InvalidArgument:
            raise
        except OSError as e:
            raise InvalidArgument(f"{field} ({m.type} on {m.destination}): "
                                  f"{e.strerror or e}") from e


def userns_data(mtype: str, data: str, idmap: userns.Idmap | None) -> str:
    """Mount data for a filesystem made for a pod user namespace: uid=/gid= of tmpfs, devpts
    and mqueue are container IDs (translated to host IDs); a tmpfs without them belongs to
    the container's root."""
    if idmap is None or mtype not in ("tmpfs", "devpts", "mqueue"):
        return data
    words = [w for w in data.split(",") if w]
    out = []
    for w in words:
        key, sep, value = w.partition("=")
        if sep and key in ("uid", "gid") and value.isdigit():
            host = idmap.host_uid(int(value)) if key == "uid" else idmap.host_gid(int(value))
            w = f"{key}={host}"
        out.append(w)
    if mtype == "tmpfs":
        keys = {w.partition("=")[0] for w in words}
        out += [f"{k}={v}" for k, v in (("uid", idmap.root_uid), ("gid", idmap.root_gid))
                if k not in keys]
    return ",".join(out)


def _apply_mount(calls: Syscalls, root: str, m: Mount, privileged: bool, field: str,
                 host_cgroup_path: str | None = None, idmap: userns.Idmap | None = None) -> None:
    flags, prop, data = parse_options(m.options)
    if m.readonly:
        flags |= syscalls.MS_RDONLY
    mtype = m.type
    data = userns_data(mtype, data, idmap)
    if m.sub_path:
        _sub_path_mount(calls, root, m, flags, prop, data, field, idmap)
        return
    if mtype == "bind":
        _bind_mount(calls, root, m, flags, prop, field, idmap)
        return
    target = mkdir_all_in_root(root, m.destination)
    if mtype == "cgroup":
        _mount_cgroupfs(calls, root, target, flags, host_cgroup_path)
        return
    if mtype == "overlay" and idmap is not None:
        _overlay_mount(calls, root, target, m, flags, data, field, idmap)
        if prop:
            _set_propagation(calls, root, target, prop)
        return
    fd = open_path_in_root(root, target)
    try:
        try:
            calls.mount(m.source or mtype, _fd_path(fd), mtype, flags, data or None)
        except OSError as e:
            if mtype == "sysfs" and e.errno == errno.EPERM:
                # e.g. sharing the host's net namespace without owning it: bind the host's
                calls.mount("/sys", _fd_path(fd), None, syscalls.MS_BIND | syscalls.MS_REC)
                _remount(calls, root, target, flags | syscalls.MS_BIND)
                if flags & syscalls.MS_RDONLY:  # the host's submounts (debugfs, bpf...) too
                    _setattr_readonly_recursive(calls, root, target)
            else:
                raise
    finally:
        os.close(fd)
    if prop:
        _set_propagation(calls, root, target, prop)


def _overlay_mount(calls: Syscalls, root: str, target: str, m: Mount, flags: int, data: str,
                   field: str, idmap: userns.Idmap | None, work_dir: str | None = None) -> None:
    """An overlay (image volume) whose lowerdir layers are idmapped copies, staged in
    `work_dir` (default: the directory holding `root`, the container's own)."""
    words = data.split(",")
    lower = next((w[len("lowerdir="):] for w in words if w.startswith("lowerdir=")), "")
    if not lower:
        raise InvalidArgument(f"{field}: an overlay mount needs lowerdir=")
    rest = [w for w in words if not w.startswith("lowerdir=")]
    staging = os.path.join(work_dir or os.path.dirname(os.path.abspath(root)),
                           ".idmap-" + field.replace("[", "-").replace("]", ""))
    fd = open_path_in_root(root, target)
    try:
        with _idmapped_layers(calls, lower.split(":"), staging, idmap, field) as layers:
            calls.mount(m.source or "overlay", _fd_path(fd), "overlay", flags,
                        ",".join(["lowerdir=" + ":".join(layers), *rest]))
    finally:
        os.close(fd)


def _bind(calls: Syscalls, src: str, target_fd: int, idmap: userns.Idmap | None,
          field: str) -> None:
    """Bind src (recursively) on the directory or file open at target_fd; idmapped with the
    pod's user namespace when there is one."""
    if idmap is None:
        calls.mount(src, _fd_path(target_fd), None, syscalls.MS_BIND | syscalls.MS_REC)
        return
    try:
        calls.bind_idmapped(src, idmap.fd, target_fd, recursive=True)
    except OSError as e:
        raise InvalidArgument(f"{field}.source: {src} cannot be idmapped for the pod's user "
                              f"namespace ({e.strerror}): its filesystem does not support "
                              "idmapped mounts") from e


def _bind_mount(calls: Syscalls, root: str, m: Mount, flags: int, prop: int, field: str,
                idmap: userns.Idmap | None = None) -> None:
    src = os.path.realpath(m.source)  # a host path that is a symlink is resolved on the host
    try:
        st = os.stat(src)
    except OSError as e:
        raise InvalidArgument(f"{field}.source: host path {m.source!r} does not exist "
                              f"({e.strerror})") from e
    if stat.S_ISDIR(st.st_mode):
        target = mkdir_all_in_root(root, m.destination)
    else:
        target = ensure_file_in_root(root, m.destination)
    fd = open_path_in_root(root, target)
    try:
        _bind(calls, src, fd, idmap, field)
    finally:
        os.close(fd)
    extra = flags & ~(syscalls.MS_BIND | syscalls.MS_REC)
    if extra:
        _remount(calls, root, target, syscalls.MS_BIND | extra)
    if m.recursive_readonly:
        fd = open_path_in_root(root, target)
        try:
            calls.mount_setattr("", syscalls.MOUNT_ATTR_RDONLY, recursive=True, dirfd=fd)
        except OSError as e:
            raise InvalidArgument(f"{field}.recursive_readonly: {e.strerror} (kernel needs "
                                  "mount_setattr, Linux >= 5.12)") from e
        finally:
            os.close(fd)
    _apply_propagation(calls, root, target, m, prop)


_PROPAGATION = {"rslave": syscalls.MS_SLAVE | syscalls.MS_REC,
                "rshared": syscalls.MS_SHARED | syscalls.MS_REC,
                "private": syscalls.MS_PRIVATE | syscalls.MS_REC}


def _apply_propagation(calls: Syscalls, root: str, target: str, m: Mount, prop: int) -> None:
    """The mount's "propagation" (rslave/rshared/private), else the one from its options."""
    propagation = _PROPAGATION.get(m.propagation or "", prop)
    if propagation:
        _set_propagation(calls, root, target, propagation)


def _sub_path_mount(calls: Syscalls, root: str, m: Mount, flags: int, prop: int, data: str,
                    field: str, idmap: userns.Idmap | None = None) -> None:
    """Mount the filesystem (or bind the source) on a staging directory next to the rootfs
    (private to this mount namespace), resolve `sub_path` inside it without leaving it,
    bind only that onto the destination, then detach the staging mount."""
    sub = m.sub_path or ""
    dest = m.destination
    staging = os.path.join(os.path.dirname(os.path.abspath(root)),
                           ".sub-path-" + field.replace("[", "-").replace("]", ""))
    os.makedirs(staging, mode=0o700, exist_ok=True)
    try:
        if m.type == "bind":
            staging_fd = os.open(staging, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _bind(calls, os.path.realpath(m.source), staging_fd, idmap, field)
            finally:
                os.close(staging_fd)
        elif m.type == "overlay" and idmap is not None:
            # the idmapped layers are staged beside it, in the container's directory (not
            # in the dirname of "/": the host's root directory, read-only on some hosts)
            _overlay_mount(calls, "/", staging, m, flags & ~(syscalls.MS_BIND | syscalls.MS_REC),
                           data, field, idmap, work_dir=os.path.dirname(staging))
        else:
            calls.mount(m.source or m.type, staging, m.type,
                        flags & ~(syscalls.MS_BIND | syscalls.MS_REC), data or None)
        try:
            target = _bind_sub_path(calls, root, staging, sub, dest, field)
        finally:
            calls.umount2(staging, syscalls.MNT_DETACH)
    finally:
        os.rmdir(staging)
    _remount(calls, root, target, syscalls.MS_BIND | (flags & ~(syscalls.MS_BIND | syscalls.MS_REC)))
    _apply_propagation(calls, root, target, m, prop)


def _bind_sub_path(calls: Syscalls, root: str, staging: str, sub: str, dest: str, field: str) -> str:
    """Bind staging/<sub> (resolved inside staging) onto dest inside root; returns the target."""
    src = secure_join(staging, sub)
    if not os.path.lexists(src):
        raise InvalidArgument(f"{field}.sub_path: {sub!r} does not exist in the filesystem "
                              f"to be mounted at {dest}")
    src_fd = open_path_in_root(staging, src)
    try:
        if stat.S_ISDIR(os.fstat(src_fd).st_mode):
            target = mkdir_all_in_root(root, dest)
        else:
            target = ensure_file_in_root(root, dest)
        dst_fd = open_path_in_root(root, target)
        try:
            calls.mount(_fd_path(src_fd), _fd_path(dst_fd), None,
                        syscalls.MS_BIND | syscalls.MS_REC)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return target


def _remount(calls: Syscalls, root: str, target: str, flags: int) -> None:
    fd = open_path_in_root(root, target)  # reopened: now the new mount's root
    try:
        calls.mount(None, _fd_path(fd), None, syscalls.MS_REMOUNT | flags)
    finally:
        os.close(fd)


def _setattr_readonly_recursive(calls: Syscalls, root: str, target: str) -> None:
    fd = open_path_in_root(root, target)
    try:
        calls.mount_setattr("", syscalls.MOUNT_ATTR_RDONLY, recursive=True, dirfd=fd)
    finally:
        os.close(fd)


def _set_propagation(calls: Syscalls, root: str, target: str, prop: int) -> None:
    fd = open_path_in_root(root, target)
    try:
        calls.mount(None, _fd_path(fd), None, prop)
    finally:
        os.close(fd)


def _mount_cgroup_dir(calls: Syscalls, root: str, target: str, fstype: str, data: str | None, flags: int,
                      host_dir: str | None) -> None:
    """A cgroup hierarchy on target: a fresh mount (seen through our cgroup namespace) or, with
    `host_dir`, a bind of the container's own directory of the host hierarchy."""
    fd = open_path_in_root(root, target)
    try:
        if host_dir is None:
            calls.mount(fstype, _fd_path(fd), fstype, flags, data)
            return
        calls.mount(host_dir, _fd_path(fd), None, syscalls.MS_BIND | syscalls.MS_REC)
    finally:
        os.close(fd)
    _remount(calls, root, target, syscalls.MS_BIND | flags)


def _mount_cgroupfs(calls: Syscalls, root: str, target: str, flags: int,
                    host_cgroup_path: str | None) -> None:
    """The cgroup hierarchies: mounted as seen from our cgroup namespace, or (host cgroup
    namespace + a container cgroup) binds of the container's own cgroup directories."""
    base = flags & (syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
                    | syscalls.MS_RELATIME)
    ro = flags & syscalls.MS_RDONLY
    mode_ = cgmode.detect_mode()
    rel_cg = host_cgroup_path.lstrip("/") if host_cgroup_path else None

    def host(mount_dir: str) -> str | None:
        return os.path.join(mount_dir, rel_cg) if rel_cg is not None else None

    if mode_ == "v2":
        _mount_cgroup_dir(calls, root, target, "cgroup2", None, base | ro, host(cgmode.CGROUP_ROOT))
        return
    fd = open_path_in_root(root, target)
    try:
        calls.mount("tmpfs", _fd_path(fd), "tmpfs", base, "mode=755")
    finally:
        os.close(fd)
    by_dir: dict[str, list[str]] = {}
    for ctrl, mdir in cgmode.v1_hierarchies().items():
        by_dir.setdefault(mdir, []).append(ctrl)
    for mdir, ctrls in sorted(by_dir.items()):
        name = os.path.basename(mdir)
        sub = mkdir_all_in_root(root, relative_in_root(root, target) + "/" + name)
        data = ",".join(["none", *ctrls] if any(c.startswith("name=") for c in ctrls)
                        else ctrls)
        _mount_cgroup_dir(calls, root, sub, "cgroup", data, base | ro, host(mdir))
        for ctrl in ctrls:  # co-mounted controllers: cpu -> cpu,cpuacct like docker
            link = os.path.join(target, ctrl)
            if ctrl != name and not ctrl.startswith("name=") and not os.path.lexists(link):
                calls.symlink(name, link)
    unified = cgmode.unified_root()
    if mode_ == "hybrid" and unified:
        sub = mkdir_all_in_root(root, relative_in_root(root, target) + "/unified")
        _mount_cgroup_dir(calls, root, sub, "cgroup2", None, base | ro, host(unified))
    if ro:
        _remount(calls, root, target, syscalls.MS_BIND | syscalls.MS_RDONLY | base)


# --------------------------------------------------------------------------- /dev

def dev_is_tmpfs(mounts: Sequence[Mount]) -> bool:
    return any(m.destination.rstrip("/") == "/dev" and m.type == "tmpfs" for m in mounts)


def create_default_devices(root: str, calls: Syscalls = REAL) -> None:
    """Standard nodes and symlinks on the container's /dev tmpfs."""
    dev_fd = open_path_in_root(root, mkdir_all_in_root(root, "/dev"))
    old = os.umask(0)
    try:
        for name, (major, minor) in DEFAULT_DEVICES.items():
            with contextlib.suppress(FileExistsError):
                calls.mknod(name, stat.S_IFCHR | 0o666, os.makedev(major, minor), dir_fd=dev_fd)
        for name, target in DEFAULT_DEV_SYMLINKS.items():
            with contextlib.suppress(FileExistsError):
                calls.symlink(target, name, dir_fd=dev_fd)
    finally:
        os.umask(old)
        os.close(dev_fd)


def create_devices(root: str, devices: Sequence[Device], calls: Syscalls = REAL) -> list[str]:
    """mknod each requested device inside the rootfs; returns devices-cgroup rules.

    A device with a `type` (CDI device nodes) is made from its own type/major/minor/file_mode/
    uid/gid; others copy the host node at host_path. Permissions "" add no cgroup rule."""
    rules = []
    for i, d in enumerate(devices):
        field = f"devices[{i}]"
        if d.type is not None:
            kind = d.type
            ftype = {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
            rdev = os.makedev(d.major, d.minor) if kind != "p" else 0
            mode, uid, gid = d.file_mode, d.uid, d.gid
        else:
            try:
                st = os.stat(d.host_path)
            except OSError as e:
                raise InvalidArgument(f"{field}.host_path: {d.host_path}: {e.strerror}") from e
            if stat.S_ISCHR(st.st_mode):
                kind, ftype = "c", stat.S_IFCHR
            elif stat.S_ISBLK(st.st_mode):
                kind, ftype = "b", stat.S_IFBLK
            else:
                raise InvalidArgument(f"{field}.host_path: {d.host_path} is not a device node")
            rdev, mode, uid, gid = st.st_rdev, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        parent_fd, name, _ = open_parent_in_root(root, d.container_path)
        old = os.umask(0)
        try:
            with contextlib.suppress(FileNotFoundError):
                calls.unlink(name, dir_fd=parent_fd)
            try:
                calls.mknod(name, ftype | mode, rdev, dir_fd=parent_fd)
            except OSError as e:
                raise InvalidArgument(f"{field}: mknod {d.container_path}: {e.strerror}") from e
            calls.chown(name, uid, gid, dir_fd=parent_fd)
        finally:
            os.umask(old)
            os.close(parent_fd)
        if kind in ("c", "b") and d.permissions:
            rules.append(f"{kind} {os.major(rdev)}:{os.minor(rdev)} {d.permissions}")
    return rules


# --------------------------------------------------------------------------- cwd, pivot

def prepare_cwd(root: str, cwd: str) -> str:
    """Create the working dir inside the rootfs; returns its symlink-free in-container path.

    A working dir inside /proc (e.g. /proc/self/fd/N, CVE-2024-21626) is refused.
    """
    lexical = os.path.normpath("/" + cwd.lstrip("/"))
    rel = relative_in_root(root, _resolve(root, cwd))
    for p in (lexical, rel):
        if p == "/proc" or p.startswith("/proc/"):
            raise InvalidArgument(f"process.cwd: {cwd!r} goes through /proc ({rel}), refused")
    mkdir_all_in_root(root, rel)
    return rel


def _resolve(root: str, path: str) -> str:
    return secure_join(root, path)


def enter_cwd(rel: str, field: str = "process.cwd", calls: Syscalls = REAL) -> None:
    """chdir after pivot_root and check the result is a reachable dir outside procfs."""
    try:
        calls.chdir(rel)
        os.getcwd()  # ENOENT when the directory is unreachable from our root
    except OSError as e:
        raise InvalidArgument(f"{field}: cannot enter {rel!r}: {e.strerror}") from e
    try:
        if os.stat(".").st_dev == os.stat("/proc").st_dev:
            raise InvalidArgument(f"{field}: {rel!r} is inside procfs, refused")
    except FileNotFoundError:
        pass


def pivot_root(root: str, calls: Syscalls = REAL) -> str:
    """Make `root` the process's / and detach the old root. Returns the path of the new root
    from here on ("/"; the root itself for a test double that does not pivot)."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        calls.fchdir(new)
        try:
            calls.pivot_root(".", ".")
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            # "/" is shared (rshared volumes) and the namespace root: binds are done, so
            # making it private now keeps their peers and satisfies pivot_root
            calls.mount(None, "/", None, syscalls.MS_PRIVATE)
            calls.pivot_root(".", ".")
        calls.fchdir(old)
        calls.mount(None, ".", None, syscalls.MS_SLAVE | syscalls.MS_REC)
        calls.umount2(".", syscalls.MNT_DETACH)
        calls.chdir("/")
    finally:
        os.close(old)
        os.close(new)
    return calls.root_after_pivot(root)


# --------------------------------------------------------------------------- after pivot

def _open_existing_in_root(root: str, path: str, field: str) -> int | None:
    """An O_PATH fd of path resolved inside the (new) root; None when it does not exist."""
    try:
        return os.open(_resolve(root, path), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InvalidArgument(f"{field}: {path}: {e.strerror}") from e


def mask_paths(paths: Sequence[str], root: str = "/", calls: Syscalls = REAL) -> None:
    """Files: /dev/null bound over; directories: an empty read-only tmpfs. Missing: skipped.
    Symlinks in the path are resolved inside the (new) root, so the target is masked."""
    for i, p in enumerate(paths):
        fd = _open_existing_in_root(root, p, f"masked_paths[{i}]")
        if fd is None:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                calls.mount("tmpfs", _fd_path(fd), "tmpfs", syscalls.MS_RDONLY, "size=0k")
            else:
                calls.mount("/dev/null", _fd_path(fd), None, syscalls.MS_BIND)
        except OSError as e:
            raise InvalidArgument(f"masked_paths[{i}]: {p}: {e.strerror}") from e
        finally:
            os.close(fd)


def readonly_paths(paths: Sequence[str], root: str = "/", calls: Syscalls = REAL) -> None:
    """Bind each path onto itself and remount it read-only (recursively). Missing: skipped."""
    for i, p in enumerate(paths):
        fd = _open_existing_in_root(root, p, f"readonly_paths[{i}]")
        if fd is None:
            continue
        try:
            calls.mount(_fd_path(fd), _fd_path(fd), None, syscalls.MS_BIND | syscalls.MS_REC)
        except OSError as e:
            raise InvalidArgument(f"readonly_paths[{i}]: {p}: {e.strerror}") from e
        finally:
            os.close(fd)
        fd = os.open(_resolve(root, p), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)  # the new mount
        try:
            calls.mount_setattr("", syscalls.MOUNT_ATTR_RDONLY, recursive=True, dirfd=fd)
        except OSError as e:
            raise InvalidArgument(f"readonly_paths[{i}]: {p}: {e.strerror}") from e
        finally:
            os.close(fd)


def remount_root_readonly(root: str = "/", calls: Syscalls = REAL) -> None:
    calls.mount(None, root, None, syscalls.MS_REMOUNT | syscalls.MS_BIND | syscalls.MS_RDONLY)
