"""Resolve paths inside a root directory without ever leaving it (a securejoin).

Used for every path that comes from an image or a request (mount destinations, working dir,
masked/read-only paths, device paths): symlinks are resolved *as if* `root` were `/`
(absolute targets restart at root, `..` stops at root), so an image cannot point a path at the
host. After resolution, `open_path_in_root` opens the result with O_PATH|O_NOFOLLOW and checks
through /proc/self/fd that the kernel agrees, so the final mount/chdir targets exactly it.
"""
from __future__ import annotations

import os
import stat

from pycri_common.errors import InvalidArgument
from runtime import dirfd

MAX_SYMLINKS = 255


def secure_join(root: str, unsafe_path: str) -> str:
    """Host path of `unsafe_path` interpreted inside `root` (symlinks resolved inside root).

    Components that do not exist are kept literally (so the result can be created).
    Raises InvalidArgument on a symlink loop.
    """
    root = os.path.abspath(root)
    remaining = unsafe_path
    resolved = ""  # relative to root, always clean, starts with "/" or is ""
    links = 0
    while remaining:
        comp, _, remaining = remaining.partition("/")
        if comp in ("", "."):
            continue
        if comp == "..":
            resolved = resolved.rsplit("/", 1)[0]
            continue
        candidate = resolved + "/" + comp
        try:
            st = os.lstat(root + candidate)
        except OSError:
            resolved = candidate
            continue
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        links += 1
        if links > MAX_SYMLINKS:
            raise InvalidArgument(f"{unsafe_path!r}: too many levels of symbolic links in {root}")
        target = os.readlink(root + candidate)
        if target.startswith("/"):
            resolved = ""
        remaining = target + ("/" + remaining if remaining else "")
    return root.rstrip("/") + resolved if resolved else root


def relative_in_root(root: str, host_path: str) -> str:
    """'/rootfs/a/b' -> '/a/b' for a path produced by secure_join(root, ...)."""
    root = os.path.abspath(root)
    if host_path == root:
        return "/"
    if not host_path.startswith(root.rstrip("/") + "/"):
        raise InvalidArgument(f"{host_path!r} is not inside {root!r}")
    return host_path[len(root.rstrip("/")):]


def _walk_dirs(root: str, rel: str, unsafe_path: str, mode: int) -> int:
    """O_PATH fd of the directory `rel` (symlink-free, from secure_join) inside root, creating
    the missing components without ever following a symlink: a container that swaps a
    component for one after resolution (through a volume it shares) gets an error instead of
    a directory made outside the root."""
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return dirfd.open_dirs(root_fd, [c for c in rel.split("/") if c], create=True,
                               mode=mode)
    except dirfd.UnsafeComponent as e:
        if e.symlink:
            raise InvalidArgument(f"{unsafe_path!r}: {e.walked} changed into a symlink") from None
        raise InvalidArgument(f"{unsafe_path!r}: {e.walked} exists and is not a directory"
                              ) from None
    finally:
        os.close(root_fd)


def mkdir_all_in_root(root: str, unsafe_path: str, mode: int = 0o755) -> str:
    """Resolve `unsafe_path` inside `root` and create every missing directory of it.

    Returns the host path. Raises InvalidArgument if an existing component is not a directory.
    """
    target = secure_join(root, unsafe_path)
    os.close(_walk_dirs(root, relative_in_root(root, target), unsafe_path, mode))
    return target


def open_parent_in_root(root: str, unsafe_path: str) -> tuple[int, str, str]:
    """Resolve inside root and create the parent directories.

    Returns (O_PATH fd of the parent, final name, host path): create the entry itself with
    ``dir_fd=`` calls on the fd, so it lands in the directory that was checked.
    """
    target = secure_join(root, unsafe_path)
    rel = relative_in_root(root, target)
    if rel == "/":
        raise InvalidArgument(f"{unsafe_path!r}: cannot replace the root")
    parent, name = rel.rsplit("/", 1)
    return _walk_dirs(root, parent, unsafe_path, 0o755), name, target


def ensure_file_in_root(root: str, unsafe_path: str, mode: int = 0o644) -> str:
    """Resolve inside root, create parent dirs and an empty file if missing (bind targets)."""
    parent_fd, name, target = open_parent_in_root(root, unsafe_path)
    try:
        try:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC
                             | os.O_NOFOLLOW, mode, dir_fd=parent_fd))
            return target
        except FileExistsError:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    finally:
        os.close(parent_fd)
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"{unsafe_path!r}: is a directory in the image, cannot mount a "
                              "file there")
    return target


def open_path_in_root(root: str, host_path: str) -> int:
    """O_PATH fd of `host_path` (from secure_join), verified to be that path inside root.

    Use ``f"/proc/self/fd/{fd}"`` as the mount target so the mount lands on what was checked.
    """
    root = os.path.abspath(root)
    try:
        fd = os.open(host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidArgument(f"cannot open {host_path!r}: {e.strerror}") from e
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidArgument(f"{host_path!r} is a symlink (changed after resolution?)")
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as e:
        os.close(fd)
        raise InvalidArgument(f"cannot verify {host_path!r}: {e.strerror}") from e
    if real != host_path or not (real == root or real.startswith(root.rstrip("/") + "/")):
        os.close(fd)
        raise InvalidArgument(f"{host_path!r} resolves to {real!r}, outside {root!r}")
    return fd
