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
import signal
import socket
from collections.abc import Callable
from typing import Any

from runtime import sysctls
from runtime import userns as userns_mod
from runtime.pod_spec import IdMaps, PodSpec
from runtime.shim import adopt as adopt_mod
from runtime.shim import namespaces, statusfile
from runtime.shim.loop import Loop
from runtime.shim.pause import join_pod_cgroup, remove_pause_cgroup, start_pause_holder
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


def remove_served_files(shim_dir: str) -> None:
    for name in SERVED_FILES:
        try:
            os.unlink(os.path.join(shim_dir, name))
        except FileNotFoundError:
            pass


def start_pod(pod: PodSpec, loop: Loop, log: Callable[[str], None], adopt: bool = False,
              **shim_kw: Any) -> tuple[Shim, dict[str, Any]]:
    """Set the pod up and serve it on loop; returns its Shim and the ready reply
    ({"pid", "pause_pid", "ns"}). shim_kw goes to Shim (unclaimed, on_done, dispatch).

    With adopt the pod runs already (the monitor that served it died): nothing is made, only
    its socket; runtime.shim.adopt builds its objects from disk and from the processes that
    outlived the dead monitor (pause-holder, keepers). A failure then leaves the pod as it
    was (nothing is killed or unpinned)."""
    pause_pid: int | None = None
    pinned: dict[str, str] = {}
    listener: socket.socket | None = None
    shim_dir, ns_dir = pod.shim_dir, pod.ns_dir
    sock_path = os.path.join(shim_dir, "shim.sock")
    try:
        _refuse_if_running(sock_path)
        if not adopt:
            namespaces.unpin_all(ns_dir)  # leftovers of a shim that died without cleaning up
        types = [] if adopt else namespaces.pod_namespace_types(pod)
        sysctls.check_sysctls(dict(pod.sysctls), types)
        userns = None if adopt else pod.userns
        if userns is not None:
            pinned = {"user": _make_pod_userns(userns, ns_dir)}
        if types:
            pause_pid = start_pause_holder(pod, types, userns_path=pinned.get("user", ""))
            join_pod_cgroup(pod, pause_pid, log)
            joined_net = pod.netns_path if "net" in types and userns is None else ""
            pinned.update(namespaces.pin(
                pause_pid, [t for t in types if not (joined_net and t == "net")], ns_dir))
            if joined_net:
                pinned["net"] = joined_net
            elif userns is not None and "net" in types and pod.netns_path:
                # where the daemon (CNI, port-forward) finds it, as for the pods it makes
                namespaces.pin_path(pinned["net"], pod.netns_path)
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(sock_path)
        os.chmod(sock_path, 0o600)
        listener.listen(128)
        if adopt:
            shim = adopt_mod.adopt(pod, loop, listener, log=log, **shim_kw)
            statusfile.write_atomic(os.path.join(shim_dir, "shim.pid"),
                                    str(os.getpid()).encode(), durable=False)
            return shim, {"pid": os.getpid(), "pause_pid": shim.state.pause_pid,
                          "ns": dict(shim.pinned)}
        statusfile.write_atomic(os.path.join(shim_dir, "shim.pid"), str(os.getpid()).encode(),
                                durable=False)
        if pause_pid is not None:  # the pause-holder outlives us: who stops it finds it here
            statusfile.write_atomic(os.path.join(shim_dir, "pause.pid"),
                                    str(pause_pid).encode(), durable=False)
        if pod.hostname and os.environ.get(FAULT_ENV) == pod.hostname:
            raise RuntimeError(f"{FAULT_ENV}: failing the set-up of pod {pod.pod_id}")
        shim = Shim(pod, loop, pause_pid, pinned, listener, log=log, **shim_kw)
    except BaseException:
        if listener is not None:
            loop.forget(listener.fileno())
            listener.close()
            remove_served_files(shim_dir)
        if pause_pid is not None:
            try:
                os.kill(pause_pid, signal.SIGKILL)
                os.waitpid(pause_pid, 0)
            except OSError:
                pass
            remove_pause_cgroup(pod, log)
        if pinned:
            try:
                namespaces.unpin_all(pod.ns_dir)
                if pod.userns is not None and pod.netns_path:
                    namespaces.unpin(pod.netns_path)
            except OSError:
                pass
        raise
    return shim, {"pid": os.getpid(), "pause_pid": pause_pid, "ns": pinned}
