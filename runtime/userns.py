"""User namespaces of pods: ID maps, making a namespace with given maps, idmapped mounts.

An ID map is a list of [container_id, host_id, length] triples (CRI IDMapping). A new user
namespace is made by a forked child that unshares CLONE_NEWUSER and waits while its parent
(host root) writes uid_map/gid_map from outside; the parent keeps an fd of the namespace
(bind-mounted onto a pin file by the caller) and lets the child go. Only single-threaded
processes may call make_userns() (the shim, the probe below): it forks.

    python3 -m runtime.userns --probe DIR [DIR ...]

runs the host probe in a process of its own (the daemon never forks): a private mount
namespace, a user namespace mapping 0 -> 65536 (65536 IDs, as critest's probe), then
open_tree(OPEN_TREE_CLONE) + mount_setattr(MOUNT_ATTR_IDMAP) of each DIR, of a tmpfs, and an
overlay mounted on an idmapped lower layer whose file must show the mapped owner. Prints
{"ok": bool, "reason": str} and exits 0.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from runtime import syscalls

IdMap = list[list[int]]   # [[container_id, host_id, length], ...]

PROBE_HOST_ID = 65536
PROBE_LENGTH = 65536


def map_text(idmap: Sequence[Sequence[int]]) -> str:
    """The /proc/<pid>/uid_map text of an ID map."""
    return "".join(f"{c} {h} {n}\n" for c, h, n in idmap)


def to_host(idmap: Sequence[Sequence[int]], container_id: int) -> int | None:
    """The host ID container_id maps to, None when unmapped."""
    for c, h, n in idmap:
        if c <= container_id < c + n:
            return h + container_id - c
    return None


@dataclass(frozen=True)
class Idmap:
    """The pod user namespace a container's mounts are idmapped with (an open fd of it) and
    its maps."""

    fd: int
    uid_map: Sequence[Sequence[int]]
    gid_map: Sequence[Sequence[int]]

    @property
    def root_uid(self) -> int:
        """The host uid of the container's root."""
        return to_host(self.uid_map, 0) or 0

    @property
    def root_gid(self) -> int:
        return to_host(self.gid_map, 0) or 0

    def host_gid(self, gid: int) -> int:
        found = to_host(self.gid_map, gid)
        return self.root_gid if found is None else found

    def host_uid(self, uid: int) -> int:
        found = to_host(self.uid_map, uid)
        return self.root_uid if found is None else found


def make_userns(uid_map: Sequence[Sequence[int]], gid_map: Sequence[Sequence[int]]) -> int:
    """A new user namespace with these maps; returns an O_RDONLY fd of it (caller closes)."""
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(go_r)
            os.close(done_w)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(go_w, b"u")
            os.read(done_r, 1)  # EOF once the parent has the namespace
            code = 0
        except BaseException:  # noqa: BLE001 - the parent sees EOF without "u"
            pass
        os._exit(code)
    os.close(go_w)
    os.close(done_r)
    fd = -1
    try:
        if os.read(go_r, 1) != b"u":
            raise OSError(1, "make_userns: the child could not unshare CLONE_NEWUSER")
        for name, idmap in (("uid_map", uid_map), ("gid_map", gid_map)):
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(map_text(idmap))
            except OSError as e:
                raise OSError(e.errno, f"writing {name} {map_text(idmap).strip()!r}: "
                                       f"{e.strerror}") from None
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        return fd
    finally:
        os.close(go_r)
        os.close(done_w)
        os.waitpid(pid, 0)


@contextmanager
def idmapped_clone(source: str, userns_fd: int, recursive: bool = False) -> Iterator[int]:
    """A detached copy of the mount at `source` showing IDs through the maps of `userns_fd`;
    yields its fd (attach it with syscalls.move_mount before the block ends)."""
    fd = syscalls.open_tree(source, recursive=recursive)
    try:
        syscalls.mount_setattr("", syscalls.MOUNT_ATTR_IDMAP, recursive=recursive, dirfd=fd,
                               userns_fd=userns_fd)
        yield fd
    finally:
        os.close(fd)


def bind_idmapped(source: str, target: str, userns_fd: int, recursive: bool = True,
                  to_dirfd: int = -100) -> None:
    """Bind `source` on `target` (relative to to_dirfd; "" = to_dirfd itself) idmapped
    (runtime.syscalls.bind_idmapped)."""
    syscalls.bind_idmapped(source, userns_fd, to_dirfd, target, recursive)


# --------------------------------------------------------------------------- host probe

def _probe(dirs: list[str]) -> str:
    """"" when idmapped mounts work on dirs, tmpfs and overlay; else the reason."""
    try:
        syscalls.unshare(syscalls.CLONE_NEWNS)
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    except OSError as e:
        return f"no private mount namespace for the probe: {e}"
    idmap = [[0, PROBE_HOST_ID, PROBE_LENGTH]]
    try:
        ns = make_userns(idmap, idmap)
    except OSError as e:
        return f"user namespaces are not available: {e}"
    try:
        for d in dirs:
            try:
                with idmapped_clone(d, ns):
                    pass
            except OSError as e:
                return f"idmapped mounts are not supported on {d}: {e}"
        base = dirs[0] if dirs else "/tmp"
        with tempfile.TemporaryDirectory(prefix=".userns-probe-", dir=base) as tmp:
            return _probe_tmpfs_overlay(tmp, ns)
    finally:
        os.close(ns)


def _probe_tmpfs_overlay(tmp: str, ns: int) -> str:
    parts = {n: os.path.join(tmp, n) for n in ("t", "tm", "l", "lm", "u", "w", "m")}
    for p in parts.values():
        os.mkdir(p)
    try:
        syscalls.mount("tmpfs", parts["t"], "tmpfs", 0, "size=16k")
        try:
            with idmapped_clone(parts["t"], ns) as fd:
                syscalls.move_mount(fd, parts["tm"])
        except OSError as e:
            return f"idmapped mounts are not supported on tmpfs: {e}"
        with open(os.path.join(parts["l"], "f"), "w"):
            pass
        try:
            with idmapped_clone(parts["l"], ns) as fd:
                syscalls.move_mount(fd, parts["lm"])
            syscalls.mount("overlay", parts["m"], "overlay", 0,
                           f"lowerdir={parts['lm']},upperdir={parts['u']},workdir={parts['w']}")
        except OSError as e:
            return f"overlayfs does not take idmapped lower layers: {e}"
        owner = os.stat(os.path.join(parts["m"], "f")).st_uid
        if owner != PROBE_HOST_ID:
            return (f"overlay on an idmapped layer shows owner {owner}, not the mapped "
                    f"{PROBE_HOST_ID}")
        return ""
    finally:
        for p in ("m", "lm", "tm", "t"):
            try:
                syscalls.umount2(parts[p], syscalls.MNT_DETACH)
            except OSError:
                pass


def probe_host(dirs: list[str], timeout: float = 30.0) -> tuple[bool, str]:
    """Runs the probe (`--probe`) in a process of its own: (supported, reason when not)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run([sys.executable, "-m", "runtime.userns", "--probe", *dirs],
                              capture_output=True, text=True, timeout=timeout, check=False,
                              env=env, cwd="/")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return bool(result["ok"]), str(result.get("reason") or "")
    except (OSError, ValueError, IndexError, KeyError, TypeError,
            subprocess.TimeoutExpired) as e:
        return False, f"the user namespace probe did not run: {type(e).__name__}: {e}"


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0] != "--probe":
        print("usage: python3 -m runtime.userns --probe DIR [DIR ...]", file=sys.stderr)
        return 2
    try:
        reason = _probe(argv[1:])
    except Exception as e:  # noqa: BLE001 - reported as the reason
        reason = f"probe failed: {type(e).__name__}: {e}"
    print(json.dumps({"ok": not reason, "reason": reason}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
