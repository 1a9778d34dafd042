"""The node monitor: one process that serves every pod's shim.sock (issue 18, stage 2).

    run_monitor(listener, state_dir)      # in the zygote's child (fork + setsid), never returns

Forked once by the zygote (runtime.zygote) from its frozen heap: single-threaded, one
runtime.shim.loop.Loop, a child subreaper, no PDEATHSIG (it outlives kill -9 of the daemon
and of the zygote). Each pod is a HostedPod: its runtime.shim.server.Shim (PodState,
Containers, Exits, Execs, Reaper, Shutdown) set up by runtime.shim.podsetup.start_pod, its
own shim.log fd and its control socket <shim_dir>/shim.sock, so the daemon's side of
contract 3 is the same as with one shim per pod (hello's shim_pid is the monitor's pid).

Isolation: every loop callback runs with its pod as the loop's owner; an exception in one
is written to that pod's shim.log (a request fails with INTERNAL, a reader that raised is
dropped) and the monitor and the other pods go on. A pod's shutdown ends that pod only
(socket, objects, fds). Reaped pids go to the pod whose PodState knows them; others wait in
one `unclaimed` dict shared by all pods (a pid report may name them later).

Control socket <state>/monitor.sock (0600, JSON lines, one request per connection, the
framing of runtime.shim.control; errors as in contract 3):

    {"op": "spawn_pod", "pod": <PodSpec JSON>} -> {"ok": true, "pid", "pause_pid", "ns"} once
        the pod is served (a requester gone before the reply: the pod is shut down again)
    {"op": "spawn_pod", "pod": ..., "adopt": true} -> the same, for a running pod whose
        monitor died: taken back (runtime.shim.adopt), never shut down for a lost requester
    {"op": "ping"} -> {"ok": true, "pid", "pods": [pod ids]}
    {"op": "zygote"} -> {"ok": true, "pid"}; the connection stays open: the zygote's link
    {"op": "drop_pod", "pod_id"} -> {"ok": true, "dropped": bool}: stop serving the pod
        without signalling anything (its processes are whoever asked's to end)
    {"op": "exit"} -> {"ok": true}, then the monitor exits; pods run on as after kill -9

Lifetime: the monitor stays up with zero pods while a zygote is linked; it exits once it has
neither pods nor a linked zygote (a restarted daemon's zygote links to a live monitor, or
starts a new one when there is none; runtime.zygote). SIGTERM/SIGINT: exit, pods run on.
"""
from __future__ import annotations

import functools
import os
import resource
import signal
import socket
import sys
import traceback
from typing import Any, NoReturn

from pycri_common.errors import FailedPrecondition, InvalidArgument, PycriError
from runtime import syscalls
from runtime.pod_spec import PodSpec
from runtime.shim import control, podsetup, spawn
from runtime.shim.control import Connection
from runtime.shim.loop import Loop
from runtime.shim.names import LOG_NAME, MONITOR_COMM, socket_path
from runtime.shim.podstate import MAX_UNCLAIMED, close_fd
from runtime.shim.server import Shim

#: a monitor nobody linked to within this time, with no pods, exits
UNLINKED_GRACE = 30.0


class HostedPod:
    """One pod the monitor serves: its spec, its shim.log fd and (once set up) its Shim."""

    __slots__ = ("log_fd", "pod", "shim")

    def __init__(self, pod: PodSpec, log_fd: int) -> None:
        self.pod = pod
        self.log_fd = log_fd
        self.shim: Shim | None = None

    def log(self, msg: str) -> None:
        """One line to this pod's shim.log (best effort)."""
        if self.log_fd >= 0:
            try:
                os.write(self.log_fd, msg.encode(errors="replace") + b"\n")
            except OSError:
                pass

    def close_log(self) -> None:
        close_fd(self.log_fd)
        self.log_fd = -1


class Monitor:
    def __init__(self, listener: socket.socket) -> None:
        self.loop = Loop(on_error=self._callback_failed)
        self.listener = listener
        self.pods: dict[str, HostedPod] = {}
        self.starting: dict[str, HostedPod] = {}  # being set up (podsetup: loop-driven)
        self.unclaimed: dict[int, int] = {}
        self.links: set[Connection] = set()   # zygotes' connections
        self.conns: set[Connection] = set()
        listener.setblocking(False)
        self.loop.add_reader(listener.fileno(), self._accept)
        self.loop.call_later(UNLINKED_GRACE, self._maybe_exit)

    # --- the control socket ------------------------------------------------------------
    def _accept(self) -> None:
        conn = control.accept(self.loop, self.listener, self._handle, self._closed)
        if conn is not None:
            self.conns.add(conn)

    def _closed(self, conn: Connection) -> None:
        self.conns.discard(conn)
        if conn in self.links:
            self.links.discard(conn)
            self._maybe_exit()

    def _handle(self, conn: Connection, line: dict[str, Any],
                fds: list[int]) -> dict[str, Any] | None:
        for fd in fds:
            close_fd(fd)
        op = line.get("op")
        if op == "spawn_pod":
            self._spawn(conn, line.get("pod"), adopt=line.get("adopt") is True)  # replies itself
            return None
        if op == "ping":
            return {"pid": os.getpid(), "pods": sorted(self.pods)}
        if op == "zygote":
            self.links.add(conn)
            return {"pid": os.getpid()}
        if op == "drop_pod":
            pod_id = line.get("pod_id")
            if not isinstance(pod_id, str):
                raise InvalidArgument("drop_pod needs a pod_id string")
            return {"dropped": self.drop_pod(pod_id)}
        if op == "exit":
            self.loop.stop()
            return {}
        raise InvalidArgument(f"unknown monitor op {op!r}")

    def _maybe_exit(self) -> None:
        if not self.pods and not self.starting and not self.links:
            self.loop.stop()

    # --- pods --------------------------------------------------------------------------
    def _spawn(self, conn: Connection, raw: Any, adopt: bool = False) -> None:
        """Set the pod up (or adopt it); the reply comes once it is served, maybe from a later
        loop turn (runtime.shim.podsetup never blocks on a pod: the others are served
        meanwhile)."""
        pod = PodSpec.from_json(raw)
        if pod.pod_id in self.pods or pod.pod_id in self.starting:
            raise FailedPrecondition(f"a shim is already running for pod {pod.pod_id} (this "
                                     "monitor serves it)")
        hp = HostedPod(pod, podsetup.open_log(pod.shim_dir))
        self.starting[pod.pod_id] = hp

        def ready(shim: Shim, info: dict[str, Any]) -> None:
            del self.starting[pod.pod_id]
            hp.shim = shim
            self.pods[pod.pod_id] = hp
            conn.reply(info)
            if adopt:
                hp.log(f"pod {pod.pod_id}: adopted by monitor {os.getpid()}")
            elif conn.closed:  # the requester gave up before it heard of the pod: undo it
                self.loop.call_as(hp, lambda: shim.begin_shutdown(0))

        def failed(e: Exception) -> None:  # this pod's failure: undone by start_pod
            self.starting.pop(pod.pod_id, None)
            hp.log(f"pod {pod.pod_id}: {'adoption' if adopt else 'set-up'} failed: "
                   f"{type(e).__name__}: {e}")
            self._release(hp)
            conn.reply_error(e if isinstance(e, PycriError)
                             else PycriError(f"{type(e).__name__}: {e}"))

        prev, self.loop.owner = self.loop.owner, hp   # what it registers is the pod's
        try:
            podsetup.start_pod(pod, self.loop, hp.log, adopt=adopt, on_ready=ready,
                               on_failed=failed, unclaimed=self.unclaimed,
                               on_done=lambda: self._pod_done(hp))
        finally:
            self.loop.owner = prev

    def _pod_done(self, hp: HostedPod) -> None:
        """The pod's shutdown finished (its Shutdown replied): forget it."""
        self._release(hp)

    def drop_pod(self, pod_id: str) -> bool:
        """Stop serving a pod without signalling anything: its socket, fds and objects go;
        its keepers keep their copies of the output pipes."""
        hp = self.pods.get(pod_id)
        if hp is None or hp.shim is None:
            return False
        podsetup.remove_served_files(hp.pod.shim_dir)
        hp.log(f"pod {pod_id}: dropped by the monitor (no longer served)")
        self._release(hp)
        return True

    def _release(self, hp: HostedPod) -> None:
        """The one way out of the monitor for a pod (its shutdown finished, drop_pod, a
        failed set-up or adoption): its objects let go of every fd (Shim.release), whatever
        it still has on the loop is dropped (readers, writers, timers), it leaves `pods` and
        its shim.log closes. The monitor is then as it was before the pod."""
        if self.pods.get(hp.pod.pod_id) is hp:
            del self.pods[hp.pod.pod_id]
        if hp.shim is not None:
            hp.shim.release()
        self.loop.drop_owner(hp)
        hp.close_log()
        self._maybe_exit()

    # --- reaping -----------------------------------------------------------------------
    def reap(self) -> None:
        for pid, status in syscalls.reaped_children():
            self.dispatch(pid, status)

    def dispatch(self, pid: int, status: int) -> None:
        """A reaped child to the pod that knows its pid; others wait in `unclaimed`."""
        for hp in self.pods.values():
            shim = hp.shim
            if shim is not None and pid in shim.state.pids:
                self.loop.call_as(hp, functools.partial(shim.reaper.child_exited, pid, status))
                return
        self.unclaimed[pid] = status
        while len(self.unclaimed) > MAX_UNCLAIMED:
            del self.unclaimed[next(iter(self.unclaimed))]

    # --- errors ------------------------------------------------------------------------
    def _callback_failed(self, owner: object, exc: Exception) -> None:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(owner, HostedPod):
            owner.log(f"pod {owner.pod.pod_id}: uncaught error (the monitor and the other "
                      f"pods go on):\n{text}")
        else:
            print(f"{MONITOR_COMM}: uncaught error:\n{text}", file=sys.stderr, flush=True)


def _redirect_stdio(state_dir: str) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    log = os.open(os.path.join(state_dir, LOG_NAME), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def _raise_nofile() -> None:
    """250 pods hold several fds each: soft RLIMIT_NOFILE up to the hard limit. Children
    (inits, execs) get the old soft limit back (runtime.shim.spawn)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        spawn.child_nofile = (soft, hard)


def run_monitor(listener: socket.socket, state_dir: str) -> NoReturn:
    code = 0
    try:
        syscalls.set_process_name(MONITOR_COMM)
        syscalls.set_child_subreaper()
        _redirect_stdio(state_dir)
        _raise_nofile()
        ino = _socket_ino(socket_path(state_dir))
        monitor = Monitor(listener)
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)

        def on_wakeup() -> None:
            got = b""
            try:
                while True:
                    chunk = os.read(wake_r, 512)
                    if not chunk:
                        break
                    got += chunk
            except BlockingIOError:
                pass
            if signal.SIGTERM in got or signal.SIGINT in got:
                monitor.loop.stop()
            monitor.reap()

        monitor.loop.add_reader(wake_r, on_wakeup)
        syscalls.release_free_heap()  # the zygote's freed heap pages: not the monitor's cost
        print(f"{MONITOR_COMM}: pid {os.getpid()} serving on {socket_path(state_dir)}",
              flush=True)
        monitor.loop.run()
        _unlink_if_ours(socket_path(state_dir), ino)
    except BaseException as e:  # noqa: BLE001
        print(f"{MONITOR_COMM}: fatal: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _socket_ino(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _unlink_if_ours(path: str, ino: int) -> None:
    """Remove the control socket unless a successor bound its own there meanwhile."""
    if ino and _socket_ino(path) == ino:
        try:
            os.unlink(path)
        except OSError:
            pass
