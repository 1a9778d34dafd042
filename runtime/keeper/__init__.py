"""pycri-keeper: the tiny static parent of each container process (keeper.c, docs/architecture.md).

The program is pycri's own C (no libc, raw syscalls: about 9 KiB on disk, 20 KiB PSS). It is
built from keeper.c with the C compiler: `python3 -m runtime.keeper` (scripts/setup.sh runs
it) writes build/pycri-keeper-<hash of the source> next to this file; `binary()` builds it on
first use when it is missing (the zygote calls it at start, so a missing compiler is a clear
start-up error of the zygote, not of a container). PYCRI_KEEPER=<path> names a prebuilt one
instead (a read-only install).

Its interface (argv, the fds 3-7, the exit file) is described at the top of keeper.c;
runtime.container_init execs it and runtime.shim reads what it writes (`read_exit`).
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import signal
from dataclasses import dataclass
from typing import Any, NoReturn

from runtime import cbuild, proc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "keeper.c")
CFLAGS = ("-Os", "-nostdlib", "-static", "-no-pie", "-ffreestanding", "-fno-builtin",
          "-fno-stack-protector", "-fno-asynchronous-unwind-tables",
          "-fno-tree-loop-distribute-patterns", "-Wall", "-Wextra", "-Werror",
          "-Wl,--build-id=none", "-s")
COMM = "pycri-keeper"

# fds of the keeper (keeper.c)
PID_FD = 3
EXIT_W_FD = 4
EXIT_R_FD = 5
STDOUT_FD = 6
STDERR_FD = 7


class KeeperUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Launch:
    """What the keeper of one container gets (keeper.c): its program, the container id, where
    it records the exit, both ends of the exit pipe and the shim's ends of the container's
    output (stdout, stderr; a tty: the pty master twice)."""

    binary: str
    container_id: str
    exit_path: str
    exit_w: int
    exit_r: int
    outputs: tuple[int, int]

    def fds(self) -> tuple[int, ...]:
        return (self.exit_w, self.exit_r, *self.outputs)


def exec_keeper(launch: Launch, container_pid: int) -> NoReturn:
    """In the process that forked the container's process (never in the container's cgroup:
    a keeper is never counted, frozen or killed with its container): the pid on a pipe at
    fd 3, fds 4-7 from `launch`, 0-2 /dev/null, everything else closed, execve the keeper."""
    try:
        pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
        os.write(pid_w, str(container_pid).encode())
        os.close(pid_w)
        srcs = [pid_r, *launch.fds()]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in srcs]
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        for target in (0, 1, 2):
            os.dup2(null, target, inheritable=True)
        for target, fd in enumerate(high, start=PID_FD):
            os.dup2(fd, target, inheritable=True)
        os.closerange(STDERR_FD + 1, 1 << 20)
        os.execv(launch.binary, [COMM, launch.container_id, launch.exit_path])
    finally:
        os._exit(127)  # the container is re-parented to the shim, which reaps it then


def _built_path() -> str:
    return cbuild.built_path(SOURCE, CFLAGS, COMM)


def build() -> str:
    """Compile keeper.c (if that build is not there yet); returns the binary's path."""
    try:
        return cbuild.build(SOURCE, CFLAGS, COMM, "set PYCRI_KEEPER to a built keeper")
    except cbuild.BuildFailed as e:
        raise KeeperUnavailable(str(e)) from None


@functools.cache
def binary() -> str:
    """The keeper to exec: $PYCRI_KEEPER, else our build (built now when missing)."""
    try:
        return cbuild.prebuilt_or_build("PYCRI_KEEPER", SOURCE, CFLAGS, COMM)
    except cbuild.BuildFailed as e:
        raise KeeperUnavailable(str(e)) from None


def exit_path(containers_dir: str, container_id: str) -> str:
    return os.path.join(containers_dir, container_id + ".exit")


def pid_path(containers_dir: str, container_id: str) -> str:
    return os.path.join(containers_dir, container_id + ".keeper")


def read_exit(path: str) -> dict[str, Any] | None:
    """{"pid", "status" (a wait status), "finished_at" (ns)} once the keeper recorded the exit."""
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(obj, dict) or not all(isinstance(obj.get(k), int)
                                            for k in ("pid", "status", "finished_at")):
        return None
    return obj


def open_keeper(pid: int, container_id: str) -> int:
    """A pidfd of the keeper `pid` of container_id, or -1 when that process is not it (gone,
    or a recycled pid): checked by its command line after the pidfd is open, so the pidfd
    names the very process that passed the check."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return -1
    argv = proc.cmdline(pid)
    if argv[:2] != [COMM, container_id]:
        os.close(fd)
        return -1
    return fd


def keeper_alive(containers_dir: str, container_id: str) -> bool:
    """Whether the keeper named by <cid>.keeper still runs (so the container's end will be
    recorded even though no shim watches it)."""
    pid = proc.read_pid_file(pid_path(containers_dir, container_id))
    fd = open_keeper(pid, container_id) if pid > 0 else -1
    if fd < 0:
        return False
    try:
        return not proc.ended(pid)
    finally:
        os.close(fd)


def kill_keeper(containers_dir: str, container_id: str) -> None:
    """SIGKILL the keeper of container_id named by its pid file (<cid>.keeper), if it is still
    there: for a container whose shim is gone (nobody else will tell it to go)."""
    pid = proc.read_pid_file(pid_path(containers_dir, container_id))
    fd = open_keeper(pid, container_id) if pid > 0 else -1
    if fd < 0:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)
