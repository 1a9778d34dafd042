"""The end of a container in the shim: a failed create, the exit (status file, attached
clients, waiters), the wait and delete operations, and forgetting it."""
from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from runtime.shim import frames, oom, statusfile, stdio
from runtime.shim.control import Connection, ShimError
from runtime.shim.podstate import PodState, close_fd, valid_id
from runtime.shim.records import Container, State, exit_code_of

DELETE_KILL_TIMEOUT = 10.0


class Exits:
    def __init__(self, pod: PodState) -> None:
        self.pod = pod
        self.loop = pod.loop

    def fail_create(self, c: Container, kind: str, message: str) -> None:
        if c.state is not State.CREATING:
            return
        c.state = State.DISCARDED
        if c.create_timer:
            c.create_timer.cancel()
        self.pod.signal(c.pid, signal.SIGKILL)
        self.pod.signal(c.init_pid, signal.SIGKILL)
        if self.pod.containers.get(c.id) is c:
            del self.pod.containers[c.id]
        stdio.release_fds(self.loop, c)
        conn, c.pending_create = c.pending_create, None
        if conn is not None:
            conn.reply_error(kind, message)
        self.pod.on_settled()

    def container_exited(self, c: Container, status: int) -> None:
        if c.state is State.EXITED:
            return
        if c.state in (State.CREATING, State.DISCARDED):
            self.fail_create(c, "PycriError",
                             f"container init exited with code {exit_code_of(status)} "
                             "before it was ready")
            stdio.release_fds(self.loop, c)
            self._remove_cgroup(c)
            return
        stdio.drain_outputs(self.loop, c)
        c.mark_exited(status, oom.was_oom_killed(c.spec, c.oom_count_at_start,
                                                 os.WTERMSIG(status) if os.WIFSIGNALED(status)
                                                 else 0))
        if c.start_error and not c.message:
            c.message = c.start_error[1]
        self._remove_cgroup(c)
        close_fd(c.gate_w)
        c.gate_w = -1
        stdio.close_stdin(c)
        self.pod.write_status(c)
        state = c.state_dict()
        payload = json.dumps(state).encode()
        for conn in list(c.attached):
            conn.send_frame(frames.EXITED, payload)
            conn.finish()
        c.attached.clear()
        for conn, timer in c.waiters:
            if timer:
                timer.cancel()
            conn.reply(state)
        c.waiters.clear()
        if c.pending_delete:
            self._finish_delete(c)
        self.pod.on_settled()

    def _remove_cgroup(self, c: Container) -> None:
        error = oom.remove_container_cgroup(c.spec)
        if error:
            print(f"pycri-shim {self.pod.pod_id}: container {c.id}: {error}", file=sys.stderr)

    def op_wait(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        c = self.pod.container(req)
        if c.state is State.EXITED:
            return c.state_dict()
        timeout = req.get("timeout")
        timer = None
        if isinstance(timeout, (int, float)) and timeout >= 0:
            def expire() -> None:
                for i, (cn, _) in enumerate(c.waiters):
                    if cn is conn:
                        del c.waiters[i]
                        conn.reply(c.state_dict())
                        return
            timer = self.loop.call_later(float(timeout), expire)
        c.waiters.append((conn, timer))
        return None

    def op_delete(self, conn: Connection, req: dict[str, Any]) -> dict[str, Any] | None:
        cid = valid_id(req.get("container_id"), "container_id")
        c = self.pod.containers.get(cid)
        if c is None or c.state is State.DISCARDED:
            statusfile.remove_state(self.pod.shim_dir, cid)
            return {"deleted": False}
        if c.state is State.CREATING:
            raise ShimError("FailedPrecondition", f"container {cid} is still being created")
        for e in list(self.pod.execs.values()):
            if e.container is c and not e.exited:
                self.pod.signal(e.pid, signal.SIGKILL)
        if c.state is State.EXITED:
            self._forget(c)
            return {"deleted": True}
        c.pending_delete.append(conn)
        self.pod.signal(c.pid, signal.SIGKILL)
        self.pod.signal(c.init_pid, signal.SIGKILL)
        self.loop.call_later(DELETE_KILL_TIMEOUT, lambda: self._delete_timeout(c))
        return None

    def _delete_timeout(self, c: Container) -> None:
        conns, c.pending_delete = c.pending_delete, []
        for conn in conns:
            conn.reply_error("DeadlineExceeded",
                             f"container {c.id} (pid {c.pid}) did not exit after SIGKILL")

    def _finish_delete(self, c: Container) -> None:
        conns, c.pending_delete = c.pending_delete, []
        self._forget(c)
        for conn in conns:
            conn.reply({"deleted": True})

    def _forget(self, c: Container) -> None:
        for conn in list(c.attached):
            conn.finish()
        c.attached.clear()
        for conn, timer in c.waiters:
            if timer:
                timer.cancel()
            conn.reply(c.state_dict())
        c.waiters.clear()
        stdio.release_fds(self.loop, c)
        if self.pod.containers.get(c.id) is c:
            del self.pod.containers[c.id]
        for eid in [eid for eid, e in self.pod.execs.items() if e.container is c and e.exited]:
            del self.pod.execs[eid]
        statusfile.remove_state(self.pod.shim_dir, c.id)
