"""Safe unpacking of one layer tarball into an empty directory (an overlay lower dir).

Every path is resolved by this module against the destination root, one
component at a time with ``openat(O_NOFOLLOW)`` on directory file descriptors,
so nothing is ever created or changed outside the root and a symlink is never
followed (tarfile is only used to *parse* the stream; its extraction code and
filters are not used). Refused, with the entry named in an InvalidArgument:

- absolute names and names with ``..`` components;
- an entry whose parent path runs through a symlink (a layer that makes
  ``x -> /etc`` or ``x -> ../..`` and then writes ``x/y``, or replaces a directory
  by a symlink and writes through it);
- hard links whose target is absolute, has ``..``, runs through a symlink, is a
  directory or does not exist in this layer;
- whiteouts naming ``.``, ``..`` or nothing (``.wh..``);
- xattrs in the ``trusted.overlay.`` namespace (they steer overlayfs).

OCI whiteouts become overlayfs whiteouts: ``.wh.name`` -> a 0:0 character device
``name`` owned by 0:0; ``.wh..wh..opq`` -> ``trusted.overlay.opaque=y`` on its directory.
Ownership, modes (setuid/setgid/sticky included), xattrs (PAX ``SCHILY.xattr.*``),
hard links, symlinks, device nodes, FIFOs and modification times are kept.
Layers may be gzip, zstd or uncompressed (detected from the first bytes). The
uncompressed stream's digest is returned so the caller can check the DiffID.
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import io
import logging
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from imageservice.content_store import disk_error
from imageservice.gzip_stream import GzipStream
from pycri_common.errors import InvalidArgument, PycriError
from runtime import dirfd

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1024 * 1024
# errors that mean "this entry is malformed" (bad xattr value, name too long, ...), not a
# problem of the machine: reported as the layer's fault, naming the entry
_BAD_ENTRY_ERRNOS = (errno.EINVAL, errno.ENAMETOOLONG, errno.ERANGE, errno.E2BIG,
                     errno.EOVERFLOW)


class LayerRefused(InvalidArgument):
    """A layer entry that would escape the root or is otherwise unsafe."""


@dataclass
class UnpackResult:
    diff_id: str      # sha256 of the uncompressed tar stream
    entries: int


class _HashingReader(io.RawIOBase):
    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.hash.update(data)
        return n

    def drain_hashing(self) -> None:
        while True:
            data = self.inner.read(_COPY_CHUNK)
            if not data:
                return
            self.hash.update(data)


def decompressed(raw: BinaryIO) -> BinaryIO:
    """A reader of the uncompressed tar: gzip and zstd are recognised by magic bytes."""
    buf: Any = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1024 * 1024)  # type: ignore[type-var]
    head = buf.peek(4)[:4]
    if head[:2] == b"\x1f\x8b":
        return GzipStream(buf)  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(buf, read_across_frames=True)  # type: ignore[return-value]
    return buf  # type: ignore[return-value]


def split_name(name: str) -> list[str]:
    """Path components of a tar member name; refuses absolute names and '..'."""
    if name.startswith("/"):
        raise LayerRefused(f"entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerRefused(f"entry {name!r} has a '..' component")
    if any("\0" in p for p in parts):
        raise LayerRefused(f"entry {name!r} has a NUL byte")
    return parts


def open_dir(root_fd: int, parts: list[str], name: str, create: bool) -> int:
    """An fd of root/parts..., never following a symlink; creates missing dirs (0755)."""
    try:
        return dirfd.open_dirs(root_fd, parts, create=create, flags=_O_DIR)
    except FileNotFoundError as e:
        missing = str(e.filename).rsplit("/", 1)[-1]
        raise LayerRefused(f"entry {name!r}: {missing!r} does not exist") from None
    except dirfd.UnsafeComponent as e:
        if e.symlink:
            raise LayerRefused(f"entry {name!r}: path component {e.component!r} is a symlink; "
                               "refusing to write through it") from None
        raise LayerRefused(f"entry {name!r}: path component {e.component!r} is not a "
                           "directory") from None


def _set_xattr(target: int | str, key: str, value: bytes, name: str) -> None:
    """Sets one xattr of an entry (never through a symlink). The kernel allows user.* only on
    files and directories, and a filesystem may support no xattrs: those are skipped with a
    warning (as other runtimes do); any other refusal names the entry."""
    try:
        if isinstance(target, int):
            os.setxattr(target, key, value)
        else:
            os.setxattr(target, key, value, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                e.errno == errno.EPERM and key.startswith("user.")):
            log.warning("entry %r: xattr %r not set: %s", name, key, e.strerror)
            return
        if e.errno in (errno.EPERM, errno.EACCES):
            raise LayerRefused(f"entry {name!r}: xattr {key!r} refused: {e.strerror}") from None
        raise


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(name: str, dir_fd: int, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _xattrs(member: tarfile.TarInfo, name: str) -> dict[str, bytes]:
    out = {}
    for k, v in member.pax_headers.items():
        if not k.startswith("SCHILY.xattr."):
            continue
        key = k[len("SCHILY.xattr."):]
        if key.startswith("trusted.overlay."):
            raise LayerRefused(f"entry {name!r} carries the overlayfs xattr {key!r}")
        out[key] = v.encode("utf-8", "surrogateescape")
    return out


class _Unpacker:
    def __init__(self, root_fd: int, layer: str) -> None:
        self.root_fd = root_fd
        self.layer = layer
        self.dir_times: dict[tuple[str, ...], int] = {}

    def entry(self, tf: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = split_name(m.name)
        if not parts:   # the root itself
            if m.isdir():
                self._meta_fd(self.root_fd, m, m.name)
                self.dir_times[()] = int(m.mtime)
            return
        base = parts[-1]
        pfd = open_dir(self.root_fd, parts[:-1], m.name, create=True)
        try:
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(pfd, parts, m)
                return
            existing = _lstat(base, pfd)
            if existing is not None:
                if m.isdir() and stat.S_ISDIR(existing.st_mode):
                    pass
                else:
                    _remove(base, pfd, existing)
            if m.isdir():
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    os.mkdir(base, 0o700, dir_fd=pfd)
                dfd = os.open(base, _O_DIR, dir_fd=pfd)
                try:
                    self._meta_fd(dfd, m, m.name)
                finally:
                    os.close(dfd)
                self.dir_times[tuple(parts)] = int(m.mtime)
            elif m.isreg():
                self._file(tf, pfd, base, m)
            elif m.issym():
                if not m.linkname:   # symlink() refuses it with ENOENT
                    raise LayerRefused(f"symlink {m.name!r} has an empty target")
                os.symlink(m.linkname, base, dir_fd=pfd)
                self._meta_path(pfd, base, m, chmod=False)
            elif m.islnk():
                self._hardlink(pfd, base, m)
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=pfd)
                self._meta_path(pfd, base, m, chmod=True)
            elif m.isfifo():
                os.mkfifo(base, 0o600, dir_fd=pfd)
                self._meta_path(pfd, base, m, chmod=True)
            else:
                raise LayerRefused(f"entry {m.name!r} has an unsupported tar type {m.type!r}")
        finally:
            os.close(pfd)

    def _whiteout(self, pfd: int, parts: list[str], m: tarfile.TarInfo) -> None:
        base = parts[-1]
        if base == OPAQUE_WHITEOUT:
            os.setxattr(pfd, "trusted.overlay.opaque", b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return   # aufs metadata (.wh..wh.plnk, …): meaningless here
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise LayerRefused(f"whiteout {m.name!r} names {target or 'nothing'!r}")
        existing = _lstat(target, pfd)
        if existing is not None:
            _remove(target, pfd, existing)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        os.chown(target, 0, 0, dir_fd=pfd, follow_symlinks=False)

    def _file(self, tf: tarfile.TarFile, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=pfd)
        try:
            src = tf.extractfile(m)
            if src is not None:
                with os.fdopen(os.dup(fd), "wb", closefd=True) as out:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
            self._meta_fd(fd, m, m.name)
            os.utime(fd, ns=(int(m.mtime) * 10**9,) * 2)
        finally:
            os.close(fd)

    def _hardlink(self, pfd: int, base: str, m: tarfile.TarInfo) -> None:
        tparts = split_name(m.linkname)
        if not tparts:
            raise LayerRefused(f"hard link {m.name!r} points at the root")
        tfd = open_dir(self.root_fd, tparts[:-1], m.name, create=False)
        try:
            st = _lstat(tparts[-1], tfd)
            if st is None:
                raise LayerRefused(f"hard link {m.name!r} -> {m.linkname!r}: target is not "
                                   "in this layer")
            if stat.S_ISDIR(st.st_mode):
                raise LayerRefused(f"hard link {m.name!r} -> {m.linkname!r}: target is a "
                                   "directory")
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _meta_fd(self, fd: int, m: tarfile.TarInfo, name: str) -> None:
        os.fchown(fd, m.uid, m.gid)
        os.fchmod(fd, stat.S_IMODE(m.mode))
        for k, v in _xattrs(m, name).items():
            _set_xattr(fd, k, v, name)

    def _meta_path(self, pfd: int, base: str, m: tarfile.TarInfo, chmod: bool) -> None:
        os.chown(base, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if chmod:   # device node or FIFO we just made: not a symlink
            os.chmod(base, stat.S_IMODE(m.mode), dir_fd=pfd)
        xattrs = _xattrs(m, m.name)
        if xattrs:
            via = f"/proc/self/fd/{pfd}/{base}"
            for k, v in xattrs.items():
                _set_xattr(via, k, v, m.name)
        os.utime(base, ns=(int(m.mtime) * 10**9,) * 2, dir_fd=pfd, follow_symlinks=False)

    def finish(self) -> None:
        """Directory mtimes last (creating children changed them), deepest first."""
        for parts in sorted(self.dir_times, key=len, reverse=True):
            ns = self.dir_times[parts] * 10**9
            fd = open_dir(self.root_fd, list(parts), "/".join(parts), create=False)
            try:
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)


def unpack_layer(raw: BinaryIO, dest: str | os.PathLike[str], layer: str = "") -> UnpackResult:
    """Unpacks the (possibly compressed) layer stream into the existing directory dest."""
    root_fd = os.open(dest, _O_DIR)
    try:
        stream = decompressed(raw)
        hashing = _HashingReader(stream)
        u = _Unpacker(root_fd, layer)
        n = 0
        try:
            with tarfile.open(fileobj=io.BufferedReader(hashing, _COPY_CHUNK), mode="r|",
                              errorlevel=2) as tf:
                for member in tf:
                    n += 1
                    try:
                        u.entry(tf, member)
                    except (ValueError, OverflowError) as e:   # NUL bytes, ids/times too big
                        raise LayerRefused(f"entry {member.name!r}: {e}") from None
                    except OSError as e:
                        if e.errno not in _BAD_ENTRY_ERRNOS:
                            raise
                        raise LayerRefused(f"entry {member.name!r}: {e.strerror}") from None
                # tarfile stops at the end-of-archive marker; hash what follows too
            hashing.drain_hashing()
            u.finish()
        except PycriError as e:
            if layer and isinstance(e, LayerRefused):
                raise LayerRefused(f"layer {layer}: {e}") from None
            raise
        except tarfile.TarError as e:
            raise InvalidArgument(f"layer {layer} is not a valid tar stream: {e}") from None
        except (EOFError, zstandard.ZstdError, gzip.BadGzipFile) as e:
            raise InvalidArgument(f"layer {layer} is corrupt or truncated: {e}") from None
        except OSError as e:
            raise disk_error(e, f"unpacking layer {layer}") from None
        return UnpackResult("sha256:" + hashing.hash.hexdigest(), n)
    finally:
        os.close(root_fd)
