"""Forking container inits and exec processes from the (single-threaded) shim.

The child resets what the shim changed (signal dispositions - Python ignores
SIGPIPE and SIGXFSZ, the wakeup fd, the signal mask), puts its stdio on 0-2,
closes every other fd except the gate/report pipes (which are O_CLOEXEC) and
hands over to runtime.container_init (contract 5, docs/architecture.md). It never returns into the
shim's code: any failure is reported on report_fd and the child _exits.
runtime.container_init is imported in the child (the zygote pre-imports it).
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
from dataclasses import dataclass
from typing import Any, NoReturn

from runtime import keeper as keeper_mod
from runtime import syscalls
from runtime.container_spec import ContainerSpec

_RESET_SIGNALS = (signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM,
                  signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _prepare_child(stdio: tuple[int, int, int], keep: tuple[int, ...]) -> None:
    signal.set_wakeup_fd(-1)
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    # stdio fds are >= 3 (the shim's own 0-2 are always open), so no clobbering
    for target, fd in enumerate(stdio):
        os.dup2(fd, target, inheritable=True)
    keep_set = sorted(set(keep))
    low = 3
    for fd in keep_set:
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, 1 << 20)


def _report_failure(report_w: int, err: BaseException) -> NoReturn:
    kind = getattr(err, "kind", None) or "PycriError"
    try:
        os.write(report_w, json.dumps({"error": f"{type(err).__name__}: {err}",
                                       "kind": kind}).encode() + b"\n")
    finally:
        os._exit(1)


@dataclass(frozen=True)
class KeeperLaunch:
    """What the keeper of one container gets (runtime/keeper/keeper.c): its program, the
    container id, where it records the exit, both ends of the exit pipe and the shim's ends of
    the container's output (stdout, stderr; a tty: the pty master twice)."""

    binary: str
    container_id: str
    exit_path: str
    exit_w: int
    exit_r: int
    outputs: tuple[int, int]


def fork_container_init(spec: ContainerSpec, stdio: tuple[int, int, int], gate_r: int,
                        report_w: int, keeper: KeeperLaunch | None = None) -> int:
    """Fork; the child runs container_init.run(spec, (0, 1, 2), gate_r, report_w).

    With `keeper` the child forks once more at once: the parent execs the keeper (the pid
    returned here is the keeper's), the grandchild is the init and, after its exec, the
    container, whose parent the keeper is."""
    pid = os.fork()
    if pid:
        return pid
    try:
        extra = (keeper.exit_w, keeper.exit_r, *keeper.outputs) if keeper else ()
        _prepare_child(stdio, (gate_r, report_w, *extra))
        keeper_fd = _split_keeper(keeper) if keeper else -1
        from runtime import container_init

        container_init.run(spec, (0, 1, 2), gate_r, report_w, keeper_fd=keeper_fd)
        raise RuntimeError("container_init.run returned")
    except BaseException as e:  # noqa: BLE001
        _report_failure(report_w, e)


def _split_keeper(keeper: KeeperLaunch) -> int:
    """Fork: the parent becomes the keeper (execve, never returns), the child returns the
    write end of the pid pipe it reports its container pid on (container_init)."""
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    keeper_pid = os.getpid()
    # before the fork (kept across execve): the init's pid-namespace intermediate may exit
    # before the keeper program runs, and its child must be re-parented to us even then
    syscalls.set_child_subreaper()
    child = os.fork()
    if child == 0:
        syscalls.set_pdeathsig(signal.SIGKILL)  # until the keeper knows our pid (container_init)
        if os.getppid() != keeper_pid:
            os._exit(1)
        os.close(pid_r)
        for fd in {keeper.exit_w, keeper.exit_r, *keeper.outputs}:
            os.close(fd)
        return pid_w
    try:
        # sources above every target first, then onto 3..7; 0-2 /dev/null; the rest closed
        srcs = [pid_r, keeper.exit_w, keeper.exit_r, *keeper.outputs]
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in srcs]
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        for target in (0, 1, 2):
            os.dup2(null, target, inheritable=True)
        for target, fd in enumerate(high, start=keeper_mod.PID_FD):
            os.dup2(fd, target, inheritable=True)
        os.closerange(keeper_mod.STDERR_FD + 1, 1 << 20)
        os.execv(keeper.binary, [keeper_mod.COMM, keeper.container_id, keeper.exit_path])
    finally:
        os._exit(127)  # cannot exec the keeper: the init dies with us (PDEATHSIG)


def fork_exec(container_pid: int, spec: ContainerSpec, process: dict[str, Any],
              stdio: tuple[int, int, int], report_w: int) -> int:
    """Fork; the child runs container_init.exec_into(...) with stdio on 0-2."""
    pid = os.fork()
    if pid:
        return pid
    try:
        _prepare_child(stdio, (report_w,))
        from runtime import container_init

        container_init.exec_into(container_pid, spec, process, (0, 1, 2), report_w)
        raise RuntimeError("container_init.exec_into returned")
    except BaseException as e:  # noqa: BLE001
        _report_failure(report_w, e)
