"""What the shim remembers about each container and exec process."""
from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pycri_common.errors import PycriError
from runtime.container_spec import ContainerSpec
from runtime.shim.crilog import CriLogWriter
from runtime.shim.loop import BufferedWriter, Timer
from runtime.shim.protocol import ContainerState

if TYPE_CHECKING:
    from runtime.shim.control import Connection


class State(StrEnum):
    """A container's state in the shim. The values are the wire and status-file format;
    "creating" and "discarded" never leave the shim (snapshot() shows "created" for the
    first, and a discarded container is gone): protocol.ContainerState.state."""

    CREATING = "creating"    # forked; its init has not reported ready yet
    CREATED = "created"      # the init waits at its gate
    RUNNING = "running"      # the gate was opened
    EXITED = "exited"        # reaped; the exit status is known
    DISCARDED = "discarded"  # create failed; being forgotten


def exit_code_of(status: int) -> int:
    """waitpid status -> exit code, 128+n for a signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


class Container:
    def __init__(self, container_id: str, spec: ContainerSpec) -> None:
        self.id = container_id
        self.spec = spec
        self.tty = spec.process.tty
        self.stdin = spec.process.stdin
        self.stdin_once = spec.process.stdin_once
        self.state = State.CREATING  # -> CREATED -> RUNNING -> EXITED (or -> DISCARDED)
        self.init_pid = 0        # the process the shim forked: the init, then the keeper
        self.keeper_alive = False
        self.keeper_pidfd = -1   # the keeper, when it is not our child (adopted: runtime.shim.adopt)
        self.exit_fd = -1        # read end of the keeper's exit pipe: EOF once it recorded
        self.exit_path = ""      # where the keeper records the exit (runtime.keeper)
        self.pidfd = -1          # the container process (pid), for signals
        self.pid = 0             # host pid of the process that execs (reported by the init)
        self.created_at = 0
        self.started_at = 0
        self.finished_at = 0
        self.exit_code = 0
        self.exit_signal = 0
        self.reason = ""
        self.message = ""
        self.user: dict[str, Any] = {}
        # the user's home as the init resolved it (None: not known, e.g. an adopted container;
        # execs then resolve the user in Python, runtime.exec_helper)
        self.home: str | None = None
        self.report_fd = -1
        self.report_buf = b""
        self.gate_w = -1
        self.outputs: dict[int, str] = {}   # fd -> "stdout" | "stderr" (tty: master -> stdout)
        self.pty_master = -1
        self.stdin_writer: BufferedWriter | None = None
        self.log: CriLogWriter | None = None
        self.attached: list[Connection] = []
        self.waiters: list[tuple[Connection, Timer | None]] = []
        self.pending_create: Connection | None = None
        self.pending_start: Connection | None = None
        self.pending_delete: list[Connection] = []
        self.create_timer: Timer | None = None
        self.start_error: PycriError | None = None
        self.oom_count_at_start: int | None = None
        self.oom_efd = -1        # cgroup v1 OOM eventfd (runtime.shim.oom.watch)
        self.oom_seen = False

    def snapshot(self) -> ContainerState:
        """What the wire and the status file say of it."""
        state = State.CREATED if self.state is State.CREATING else self.state
        return ContainerState(state.value, self.pid, self.created_at, self.started_at,
                              self.finished_at, self.exit_code, self.reason, self.message)

    def mark_exited(self, status: int, oom_killed: bool) -> None:
        self.state = State.EXITED
        self.finished_at = time.time_ns()
        self.exit_code = exit_code_of(status)
        self.exit_signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
        if oom_killed:
            self.reason = "OOMKilled"
        elif self.exit_code == 0:
            self.reason = "Completed"
        else:
            self.reason = "Error"


class ExecProcess:
    def __init__(self, exec_id: str, container: Container) -> None:
        self.id = exec_id
        self.container = container
        self.forked_pid = 0
        self.pid = 0
        self.report_fd = -1
        self.report_buf = b""
        self.error: PycriError | None = None
        self.pending_reply: Connection | None = None
        # exec with wait: the exec_wait timeout its reply waits for the exit with
        self.reply_on_exit: float | None = None
        self.exited = False
        self.exit_code = 0
        self.timed_out = False
        self.waiters: list[tuple[Connection, Timer | None]] = []
