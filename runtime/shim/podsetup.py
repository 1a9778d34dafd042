"""Setting one pod up inside the monitor: start_pod(pod, loop, log, ...) (runtime.shim.monitor
calls it per spawn_pod request, with the PodSpec of contract 2 parsed).

Order: directories -> refuse when something answers on shim.sock already -> leftovers of a
shim that died without cleaning up -> sysctls check -> the pod user namespace when
pod.userns is set (maps written from here, pinned at <ns_dir>/user) -> pause-holder (new
namespaces, hostname, sysctls; with a pod PID namespace the monitor unshares CLONE_NEWPID
around that one fork and setns()es back to its own, runtime.shim.pause) -> pod cgroup -> pin
namespaces (with a user namespace the network one also at pod.netns_path, where the daemon
runs CNI) -> control socket -> shim.pid (the monitor's pid: the process serving the pod) and
pause.pid -> the pod's Shim. Any failure undoes everything done for this pod (and only that)
and raises; nothing process-wide changes per pod: its messages go to its own shim.log fd.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from pycri_common.timeouts import scaled
from runtime import sysctls
from runtime import userns as userns_mod
from runtime.pod_spec import IdMaps, PodSpec
from runtime.shim import adopt as adopt_mod
from runtime.shim import namespaces, statusfile
from runtime.shim.loop import Loop, Timer
from runtime.shim.pause import (
    REPORT_TIMEOUT,
    PauseError,
    fork_pause_holder,
    join_pod_cgroup,
    kill_child,
    pause_report,
)
from runtime.shim.server import Shim

#: test hook: a pod whose hostname this names fails its set-up once its socket is bound (the
#: last step), so tests see every step before it undone
FAULT_ENV = "PYCRI_TEST_FAIL_POD_SETUP"

#: the files of a served pod under its shim_dir that go with it (status files stay)
SERVED_FILES = ("shim.sock", "shim.pid", "pause.pid")


def open_log(shim_dir: str) -> int:
    """The pod's shim.log, for appending (makes shim_dir and its containers/ dir)."""
    os.makedirs(statusfile.containers_dir(shim_dir), mode=0o700, exist_ok=True)
    return os.open(os.path.join(shim_dir, "shim.log"),
                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)


def _refuse_if_running(sock_path: str) -> None:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    probe.settimeout(1.0)
    try:
        probe.connect(sock_path)
    except OSError:
        return
    finally:
        probe.close()
    raise RuntimeError(f"a shim is already running on {sock_path}")


def _make_pod_userns(userns: IdMaps, ns_dir: str) -> str:
    """The pod's user namespace with its maps, pinned at <ns_dir>/user; returns that path."""
    fd = userns_mod.make_userns(userns.uid_map, userns.gid_map)
    try:
        os.makedirs(ns_dir, mode=0o711, exist_ok=True)
        target = os.path.join(ns_dir, "user")
        namespaces.pin_path(f"/proc/self/fd/{fd}", target)
        return target
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_served_files(shim_dir: str) -> None:
    for name in SERVED_FILES:
        _unlink(os.path.join(shim_dir, name))


OnReady = Callable[[Shim, dict[str, Any]], None]
OnFailed = Callable[[Exception], None]


def start_pod(pod: PodSpec, loop: Loop, log: Callable[[str], None], adopt: bool = False, *,
              on_ready: OnReady, on_failed: OnFailed, **shim_kw: Any) -> None:
    """Set the pod up and serve it on loop; then on_ready(its Shim, the ready reply {"pid",
    "pause_pid", "ns"}), or on_failed(error) with everything done for it undone. Never
    blocks on the pod: the pause-holder's report is read on the loop (bounded by
    pause.REPORT_TIMEOUT), so either may come from a later loop turn. shim_kw goes to Shim
    (unclaimed, on_done).

    With adopt the pod runs already (the monitor that served it died): nothing is made, only
    its socket; runtime.shim.adopt builds its objects from disk and from the processes that
    outlived the dead monitor (pause-holder, keepers), at once. A failure then leaves the
    pod as it was (nothing is killed or unpinned; pause.pid stays)."""
    _PodSetup(pod, loop, log, adopt, on_ready, on_failed, shim_kw).begin()


class _PodSetup:
    """One pod's set-up in steps (begin -> the pause-holder's report -> _serve), with what
    it made so far for the undo (_fail)."""

    def __init__(self, pod: PodSpec, loop: Loop, log: Callable[[str], None], adopt: bool,
                 on_ready: OnReady, on_failed: OnFailed, shim_kw: dict[str, Any]) -> None:
        self.pod, self.loop, self.log, self.adopt = pod, loop, log, adopt
        self.on_ready, self.on_failed, self.shim_kw = on_ready, on_failed, shim_kw
        unclaimed = shim_kw.get("unclaimed")
        self.unclaimed: dict[int, int] = {} if unclaimed is None else unclaimed
        self.sock_path = os.path.join(pod.shim_dir, "shim.sock")
        self.types: list[str] = []
        self.userns: IdMaps | None = None
        self.pause_pid: int | None = None
        self.pinned: dict[str, str] = {}
        self.listener: socket.socket | None = None
        self.report_r = -1
        self.report = b""
        self.timer: Timer | None = None
        self.done = False

    def begin(self) -> None:
        pod = self.pod
        try:
            _refuse_if_running(self.sock_path)
            if self.adopt:
                self._serve()
                return
            namespaces.unpin_all(pod.ns_dir)  # leftovers of a shim that died without cleaning up
            self.types = namespaces.pod_namespace_types(pod)
            sysctls.check_sysctls(dict(pod.sysctls), self.types)
            self.userns = pod.userns
            if self.userns is not None:
                self.pinned = {"user": _make_pod_userns(self.userns, pod.ns_dir)}
            if not self.types:
                self._serve()
                return
            self.pause_pid, self.report_r = fork_pause_holder(
                pod, self.types, userns_path=self.pinned.get("user", ""))
            self.loop.add_reader(self.report_r, self._on_report)
            self.timer = self.loop.call_later(scaled(REPORT_TIMEOUT), self._report_late)
        except Exception as e:  # noqa: BLE001 - this pod's failure
            self._fail(e)

    def _on_report(self) -> None:
        try:
            try:
                chunk = os.read(self.report_r, 65536)
            except BlockingIOError:
                return
            if chunk:
                self.report += chunk
                return
            self._close_report()   # EOF: it exec'd the pause program, or exited
            error = pause_report(self.report)
            if error:
                raise PauseError(error)
            self._pause_up()
            self._serve()
        except Exception as e:  # noqa: BLE001 - this pod's failure
            self._fail(e)

    def _report_late(self) -> None:
        self._fail(PauseError(f"pause-holder did not report within {scaled(REPORT_TIMEOUT)}s"))

    def _close_report(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.report_r >= 0:
            self.loop.forget(self.report_r)
            os.close(self.report_r)
            self.report_r = -1

    def _pause_up(self) -> None:
        """The pause-holder is set up: its cgroup, the namespace pins."""
        pod, pause_pid, userns = self.pod, self.pause_pid, self.userns
        assert pause_pid is not None
        if pause_pid in self.unclaimed:  # reaped by the monitor meanwhile
            raise PauseError("pause-holder exited during set-up")
        join_pod_cgroup(pod, pause_pid, self.log)
        joined_net = pod.netns_path if "net" in self.types and userns is None else ""
        self.pinned.update(namespaces.pin(
            pause_pid, [t for t in self.types if not (joined_net and t == "net")], pod.ns_dir))
        if joined_net:
            self.pinned["net"] = joined_net
        elif userns is not None and "net" in self.types and pod.netns_path:
            # where the daemon (CNI, port-forward) finds it, as for the pods it makes
            namespaces.pin_path(self.pinned["net"], pod.netns_path)

    def _serve(self) -> None:
        """The control socket, shim.pid and pause.pid, the pod's Shim: on_ready."""
        pod, shim_dir = self.pod, self.pod.shim_dir
        _unlink(self.sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.listener.bind(self.sock_path)
        os.chmod(self.sock_path, 0o600)
        self.listener.listen(128)
        if self.adopt:
            shim = adopt_mod.adopt(pod, self.loop, self.listener, log=self.log, **self.shim_kw)
            statusfile.write_atomic(os.path.join(shim_dir, "shim.pid"),
                                    str(os.getpid()).encode(), durable=False)
            info = {"pid": os.getpid(), "pause_pid": shim.state.pause_pid,
                    "ns": dict(shim.pinned)}
        else:
            statusfile.write_atomic(os.path.join(shim_dir, "shim.pid"),
                                    str(os.getpid()).encode(), durable=False)
            if self.pause_pid is not None:  # it outlives us: who stops it finds it here
                statusfile.write_atomic(os.path.join(shim_dir, "pause.pid"),
                                        str(self.pause_pid).encode(), durable=False)
            if pod.hostname and os.environ.get(FAULT_ENV) == pod.hostname:
                raise RuntimeError(f"{FAULT_ENV}: failing the set-up of pod {pod.pod_id}")
            shim = Shim(pod, self.loop, self.pause_pid, self.pinned, self.listener, log=self.log,
                        **self.shim_kw)
            info = {"pid": os.getpid(), "pause_pid": self.pause_pid, "ns": self.pinned}
        self.done = True
        self.on_ready(shim, info)

    def _fail(self, error: Exception) -> None:
        """Undo what was made for this pod (only that), then on_failed."""
        if self.done:
            raise error   # on_ready itself failed: the caller's to handle
        self.done = True
        pod = self.pod
        self._close_report()
        listener = self.listener
        if listener is not None:
            if listener.fileno() >= 0:  # (a failed adoption's Shim.release closed it)
                self.loop.forget(listener.fileno())
                listener.close()
            if self.adopt:  # the pod runs on: pause.pid (and the dead monitor's shim.pid) stay
                _unlink(self.sock_path)
            else:
                remove_served_files(pod.shim_dir)
        if self.pause_pid is not None:
            kill_child(self.loop, self.pause_pid, pod, self.log, self.unclaimed)
        if self.pinned:
            try:
                namespaces.unpin_all(pod.ns_dir)
                if pod.userns is not None and pod.netns_path:
                    namespaces.unpin(pod.netns_path)
            except OSError:
                pass
        self.on_failed(error)
