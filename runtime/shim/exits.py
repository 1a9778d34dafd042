"""The end of a container in the shim: a failed create, the exit (status file, attached
clients, waiters), the wait and delete operations, and forgetting it."""
from __future__ import annotations

import os
import signal

from pycri_common.errors import DeadlineExceeded, FailedPrecondition, PycriError
from runtime.shim import frames, oom, protocol, statusfile, stdio
from runtime.shim.control import Connection
from runtime.shim.podstate import PodState, close_fd
from runtime.shim.records import Container, State, exit_code_of

DELETE_KILL_TIMEOUT = 10.0


class Exits:
    def __init__(self, pod: PodState) -> None:
        self.pod = pod
        self.loop = pod.loop

    def fail_create(self, c: Container, err: PycriError) -> None:
        if c.state is not State.CREATING:
            return
        c.state = State.DISCARDED
        if c.create_timer:
            c.create_timer.cancel()
        self.pod.signal_container(c, signal.SIGKILL)
        self.pod.signal(c.init_pid, signal.SIGKILL)  # the keeper (or the init without one)
        if self.pod.containers.get(c.id) is c:
            del self.pod.containers[c.id]
        stdio.release_fds(self.loop, c)
        conn, c.pending_create = c.pending_create, None
        if conn is not None:
            conn.reply_error(err)
        self.pod.on_settled()

    def container_exited(self, c: Container, status: int, finished_at: int = 0) -> None:
        """c's process ended with wait status `status` (as its keeper recorded it, at
        `finished_at`, or reaped here)."""
        if c.state is State.EXITED:
            return
        if c.state in (State.CREATING, State.DISCARDED):
            self.fail_create(c, PycriError(f"container init exited with code "
                                           f"{exit_code_of(status)} before it was ready"))
            stdio.release_fds(self.loop, c)
            self._remove_cgroup(c)
            return
        stdio.drain_outputs(self.loop, c)
        c.mark_exited(status, oom.was_oom_killed(self.loop, c, os.WTERMSIG(status)
                                                 if os.WIFSIGNALED(status) else 0))
        if finished_at:
            c.finished_at = finished_at
        if c.start_error and not c.message:
            c.message = str(c.start_error)
        self._remove_cgroup(c)
        close_fd(c.gate_w)
        c.gate_w = -1
        stdio.close_stdin(c)
        self.pod.write_status(c)
        if c.keeper_alive:  # it waits for this once it recorded the exit; the pipes are drained
            self.pod.signal_keeper(c, signal.SIGTERM)
        state = c.snapshot()
        payload = state.to_frame()
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
            self.pod.log(f"pod {self.pod.pod_id}: container {c.id}: {error}")

    def op_wait(self, conn: Connection, req: protocol.Wait) -> protocol.ContainerState | None:
        c = self.pod.container(req.container_id)
        if c.state is State.EXITED:
            return c.snapshot()
        timer = None
        if req.timeout is not None:
            def expire() -> None:
                for i, (cn, _) in enumerate(c.waiters):
                    if cn is conn:
                        del c.waiters[i]
                        conn.reply(c.snapshot())
                        return
            timer = self.loop.call_later(req.timeout, expire)
        c.waiters.append((conn, timer))
        return None

    def op_delete(self, conn: Connection, req: protocol.Delete) -> protocol.DeleteReply | None:
        cid = req.container_id
        c = self.pod.containers.get(cid)
        if c is None or c.state is State.DISCARDED:
            statusfile.remove_state(self.pod.shim_dir, cid)
            return protocol.DeleteReply(False)
        if c.state is State.CREATING:
            raise FailedPrecondition(f"container {cid} is still being created")
        for e in list(self.pod.execs.values()):
            if e.container is c and not e.exited:
                self.pod.signal(e.pid, signal.SIGKILL)
        if c.state is State.EXITED:
            self._forget(c)
            return protocol.DeleteReply(True)
        c.pending_delete.append(conn)
        self.pod.signal_container(c, signal.SIGKILL)
        self.loop.call_later(DELETE_KILL_TIMEOUT, lambda: self._delete_timeout(c))
        return None

    def _delete_timeout(self, c: Container) -> None:
        conns, c.pending_delete = c.pending_delete, []
        for conn in conns:
            conn.reply_error(DeadlineExceeded(f"container {c.id} (pid {c.pid}) did not exit "
                                              "after SIGKILL"))

    def _finish_delete(self, c: Container) -> None:
        conns, c.pending_delete = c.pending_delete, []
        self._forget(c)
        for conn in conns:
            conn.reply(protocol.DeleteReply(True))

    def _forget(self, c: Container) -> None:
        for conn in list(c.attached):
            conn.finish()
        c.attached.clear()
        for conn, timer in c.waiters:
            if timer:
                timer.cancel()
            conn.reply(c.snapshot())
        c.waiters.clear()
        stdio.release_fds(self.loop, c)
        if self.pod.containers.get(c.id) is c:
            del self.pod.containers[c.id]
        for eid in [eid for eid, e in self.pod.execs.items() if e.container is c and e.exited]:
            del self.pod.execs[eid]
        statusfile.remove_state(self.pod.shim_dir, c.id)
