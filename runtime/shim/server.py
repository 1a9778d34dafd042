"""The shim's control socket: connections and the dispatch of operations (contract 3).

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
from collections.abc import Callable
from typing import Any

from runtime.shim import stdio
from runtime.shim.containers import Containers
from runtime.shim.control import Connection, ShimError
from runtime.shim.execs import Execs
from runtime.shim.exits import Exits
from runtime.shim.loop import Loop
from runtime.shim.podstate import PodState, close_fd
from runtime.shim.reaper import Reaper
from runtime.shim.records import State
from runtime.shim.shutdown import Shutdown

_ALWAYS_ALLOWED = frozenset({"hello", "state", "wait", "shutdown", "exec_wait", "delete", "kill"})
_HIDDEN = (State.CREATING, State.DISCARDED)

Op = Callable[[Connection, dict[str, Any]], "dict[str, Any] | None"]


class Shim:
    def __init__(self, pod: dict[str, Any], loop: Loop, pause_pid: int | None,
                 pinned: dict[str, str], listener: socket.socket) -> None:
        self.state = PodState(pod, loop, pause_pid)
        self.loop = loop
        self.pinned = pinned
        self.listener = listener
        self.conns: set[Connection] = set()
        exits = Exits(self.state)
        containers = Containers(self.state, exits)
        self.execs = Execs(self.state)
        self.reaper = Reaper(self.state, containers, exits, self.execs)
        self.shutdown = Shutdown(self.state, self.execs, self.reaper, listener)
        self._ops: dict[str, Op] = {
            "hello": self.op_hello, "create": containers.op_create, "start": containers.op_start,
            "kill": containers.op_kill, "state": self.op_state, "wait": exits.op_wait,
            "delete": exits.op_delete, "reopen_log": containers.op_reopen_log,
            "exec_wait": self.execs.op_exec_wait, "exec_kill": self.execs.op_exec_kill,
            "attach": containers.op_attach, "shutdown": self.shutdown.op_shutdown,
        }
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), self._accept)

    # --- what runtime.shim.main drives ---------------------------------------------
    def reap(self) -> None:
        self.reaper.reap()

    def begin_shutdown(self, grace: float) -> None:
        self.shutdown.begin(grace)

    def stop_pause(self) -> None:
        self.shutdown.stop_pause()

    # --- connections ----------------------------------------------------------
    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self.conns.add(Connection(self.loop, sock, self.handle, self._conn_closed))

    def _conn_closed(self, conn: Connection) -> None:
        self.conns.discard(conn)
        for c in self.state.containers.values():
            stdio.detach(c, conn)

    def handle(self, conn: Connection, req: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        op = req.get("op")
        fn = self._ops.get(op) if isinstance(op, str) else None
        try:
            if fn is None and op != "exec":
                raise ShimError("InvalidArgument", f"unknown op {op!r}")
            if self.state.shutting_down and op not in _ALWAYS_ALLOWED:
                raise ShimError("FailedPrecondition", f"pod {self.state.pod_id} is shutting down")
            if fn is None:  # exec: the only op that takes fds
                taken, fds = fds, []
                self.execs.op_exec(conn, req, taken)
                return None
            return fn(conn, req)
        finally:
            for fd in fds:
                close_fd(fd)

    # --- hello, state ------------------------------------------------------------
    def op_hello(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        s = self.state
        return {"pod_id": s.pod_id, "shim_pid": os.getpid(), "pause_pid": s.pause_pid,
                "pause_alive": s.pause_alive, "ns": dict(self.pinned),
                "containers": sorted(cid for cid, c in s.containers.items()
                                     if c.state not in _HIDDEN)}

    def op_state(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any]:
        if req.get("container_id") is not None:
            c = self.state.container(req)
            return {"containers": {c.id: c.state_dict()}}
        return {"containers": {cid: c.state_dict() for cid, c in self.state.containers.items()
                               if c.state not in _HIDDEN}}
