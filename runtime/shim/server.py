"""The shim's control socket: connections and the dispatch of operations (contract 3,
docs/architecture.md).

Each request line is parsed into its runtime.shim.protocol dataclass before an operation
sees it; errors are pycri_common.errors classes, replied by class name.
Single-threaded: everything runs from runtime.shim.loop callbacks. Operations
that wait (create, start, wait, delete, exec, exec_wait, shutdown) keep the
connection pending and reply from a later callback; nothing ever blocks the loop.
The operations live by concern: runtime.shim.containers (create, start, kill,
reopen_log, attach), runtime.shim.exits (wait, delete), runtime.shim.execs,
runtime.shim.shutdown; runtime.shim.reaper tells whose exit a reaped child was.
"""
from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from typing import Any

from pycri_common.errors import FailedPrecondition, PycriError
from runtime.pod_spec import PodSpec
from runtime.shim import control, protocol, stdio
from runtime.shim.containers import Containers
from runtime.shim.control import Connection
from runtime.shim.execs import Execs
from runtime.shim.exits import Exits
from runtime.shim.loop import Loop
from runtime.shim.podstate import PodState, close_fd, log_to_stderr
from runtime.shim.reaper import Reaper
from runtime.shim.records import State
from runtime.shim.shutdown import Shutdown

_ALWAYS_ALLOWED = frozenset({"hello", "state", "wait", "shutdown", "exec_wait", "delete", "kill"})
_HIDDEN = (State.CREATING, State.DISCARDED)

#: an operation: (connection, its parsed request) -> the reply, or None when it replies later
Op = Callable[[Connection, Any], "protocol.Reply | None"]


class Shim:
    """One pod's objects and its control socket. `log`, `unclaimed` and `on_done`
    are what runtime.shim.monitor gives each pod it hosts (PodState, Shutdown say what they
    are); the defaults are those of a process serving one pod."""

    def __init__(self, pod: PodSpec, loop: Loop, pause_pid: int | None,
                 pinned: dict[str, str], listener: socket.socket, *,
                 log: Callable[[str], None] = log_to_stderr,
                 unclaimed: dict[int, int] | None = None,
                 on_done: Callable[[], None] | None = None) -> None:
        self.state = PodState(pod, loop, pause_pid, log, unclaimed)
        self.loop = loop
        self.pinned = pinned
        self.listener = listener
        self.conns: set[Connection] = set()
        self.exits = Exits(self.state)
        self.containers = Containers(self.state, self.exits)
        self.execs = Execs(self.state)
        self.reaper = Reaper(self.state, self.containers, self.exits, self.execs)
        self.shutdown = Shutdown(self.state, self.execs, self.reaper, listener, on_done)
        # By op name, not a match over the request classes: each class a request touches
        # costs a copied page in every shim (the zygote's objects are shared until written,
        # and a reference count is a write). Each handler's own signature names its class.
        c, x, e = self.containers, self.exits, self.execs
        self._ops: dict[str, Op] = {
            "hello": self.op_hello, "state": self.op_state, "create": c.op_create,
            "start": c.op_start, "kill": c.op_kill, "reopen_log": c.op_reopen_log,
            "attach": c.op_attach, "wait": x.op_wait, "delete": x.op_delete,
            "exec_wait": e.op_exec_wait, "exec_kill": e.op_exec_kill,
            "shutdown": self.shutdown.op_shutdown}
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._accept)

    # --- what runtime.shim.monitor drives ------------------------------------------
    def reap(self) -> None:
        self.reaper.reap()

    def begin_shutdown(self, grace: float) -> None:
        self.shutdown.begin(grace)

    def close_connections(self) -> None:
        """Close every client connection (the pod is done; replies were sent)."""
        for conn in list(self.conns):
            conn.close()

    def release(self) -> None:
        """Let go of everything the pod holds in this process, on every way out (its
        shutdown finished, drop_pod, a failed adoption): each container's fds (pipes, pty,
        log, pidfds, exit pipe, OOM eventfd), the exec report pipes, the pause-holder's
        pidfd, the listener and the client connections; the pids it tracks are forgotten.
        Nothing is signalled. Idempotent. The owner's timers are the caller's
        (Loop.drop_owner: runtime.shim.monitor)."""
        loop = self.loop
        for c in list(self.state.containers.values()):
            stdio.release_fds(loop, c)
        for e in self.state.execs.values():
            loop.forget(e.report_fd)
            close_fd(e.report_fd)
            e.report_fd = -1
        self.state.pids.clear()
        loop.forget(self.state.pause_pidfd)
        close_fd(self.state.pause_pidfd)
        self.state.pause_pidfd = -1
        if self.listener.fileno() >= 0:
            loop.forget(self.listener.fileno())
            self.listener.close()
        self.close_connections()

    # --- connections ----------------------------------------------------------
    def _accept(self) -> None:
        conn = control.accept(self.loop, self.listener, self.handle, self._conn_closed)
        if conn is not None:
            self.conns.add(conn)

    def _conn_closed(self, conn: Connection) -> None:
        self.conns.discard(conn)
        for c in self.state.containers.values():
            stdio.detach(c, conn)

    def handle(self, conn: Connection, line: dict[str, Any],
               fds: list[int]) -> protocol.Reply | None:
        """Parse the request line (protocol) and hand it to its operation; None: the
        operation replies later. Only exec takes fds: any others are closed."""
        try:
            cls = protocol.request_class(line)
            op = cls.op
            if self.state.shutting_down and op not in _ALWAYS_ALLOWED:
                raise FailedPrecondition(f"pod {self.state.pod_id} is shutting down")
            req = cls.from_json(line)
            if op == "exec":
                assert isinstance(req, protocol.Exec)
                taken, fds = fds, []
                self.execs.op_exec(conn, req, taken)
                return None
            return self._ops[op](conn, req)
        except PycriError:
            raise
        except Exception as e:  # a bug: INTERNAL to the caller (control.py), logged here
            self.state.log(f"pod {self.state.pod_id}: {line.get('op')!r} failed:\n"
                           + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
            raise
        finally:
            for fd in fds:
                close_fd(fd)

    # --- hello, state ------------------------------------------------------------
    def op_hello(self, conn: Connection, req: protocol.Hello) -> protocol.HelloReply:
        s = self.state
        return protocol.HelloReply(s.pod_id, os.getpid(), s.pause_pid, s.pause_alive,
                                   dict(self.pinned),
                                   sorted(cid for cid, c in s.containers.items()
                                          if c.state not in _HIDDEN))

    def op_state(self, conn: Connection, req: protocol.State) -> protocol.StateReply:
        if req.container_id is not None:
            c = self.state.container(req.container_id)
            return protocol.StateReply({c.id: c.snapshot()})
        return protocol.StateReply({cid: c.snapshot() for cid, c in self.state.containers.items()
                                    if c.state not in _HIDDEN})
