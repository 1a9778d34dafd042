"""Entry point of a pod shim: run_shim(pod, ready_fd) (called in the zygote's child, with the
PodSpec the zygote parsed; contract 2 of docs/architecture.md).

Order: subreaper -> directories -> SIGCHLD wakeup -> the pod user namespace when
pod.userns is set (maps written from here, pinned at <ns_dir>/user) -> pause-holder (new
namespaces, hostname, sysctls) -> pin namespaces (with a user namespace the network one also
at pod.netns_path, where the daemon runs CNI) -> control socket -> shim.pid -> report
ready on ready_fd -> event loop. Any failure undoes what was done and reports
{"ok": false, "error": ...}. The shim exits after "shutdown" or SIGTERM.

With adopt=True the shim is the successor of one that died (kill -9): it makes nothing,
runtime.shim.adopt builds the pod's state from disk and from the processes that outlived
the dead shim (pause-holder, keepers), and it serves the same control socket.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any, NoReturn

from runtime import syscalls, sysctls
from runtime import userns as userns_mod
from runtime.pod_spec import IdMaps, PodSpec
from runtime.shim import adopt as adopt_mod
from runtime.shim import namespaces, statusfile
from runtime.shim.loop import Loop
from runtime.shim.pause import join_pod_cgroup, start_pause_holder
from runtime.shim.server import Shim

SHUTDOWN_GRACE_ON_SIGTERM = 10.0


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


def _redirect_stdio(shim_dir: str) -> None:
    null = os.open("/dev/null", os.O_RDWR)
    log = os.open(os.path.join(shim_dir, "shim.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                  0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)


def _report(fd: int, msg: dict[str, Any]) -> bool:
    """Tell the zygote; False when nobody listens any more (EPIPE)."""
    try:
        os.write(fd, json.dumps(msg).encode() + b"\n")
        return True
    except OSError:
        return False
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


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


def run_shim(pod: PodSpec, ready_fd: int, adopt: bool = False) -> NoReturn:
    pause_pid: int | None = None
    pinned: dict[str, str] = {}
    listener: socket.socket | None = None
    sock_path = ""
    try:
        syscalls.set_process_name("pycri-shim")
        syscalls.set_child_subreaper()
        shim_dir, ns_dir = pod.shim_dir, pod.ns_dir
        os.makedirs(statusfile.containers_dir(shim_dir), mode=0o700, exist_ok=True)
        _redirect_stdio(shim_dir)
        _refuse_if_running(os.path.join(shim_dir, "shim.sock"))
        if not adopt:
            namespaces.unpin_all(ns_dir)  # leftovers of a shim that died without cleaning up
        types = [] if adopt else namespaces.pod_namespace_types(pod)
        sysctls.check_sysctls(dict(pod.sysctls), types)

        loop = Loop()
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)

        userns = None if adopt else pod.userns
        if userns is not None:
            pinned = {"user": _make_pod_userns(userns, ns_dir)}
        if types:
            pause_pid = start_pause_holder(pod, types, userns_path=pinned.get("user", ""))
            join_pod_cgroup(pod, pause_pid)
            joined_net = pod.netns_path if "net" in types and userns is None else ""
            pinned.update(namespaces.pin(
                pause_pid, [t for t in types if not (joined_net and t == "net")], ns_dir))
            if joined_net:
                pinned["net"] = joined_net
            elif userns is not None and "net" in types and pod.netns_path:
                # where the daemon (CNI, port-forward) finds it, as for the pods it makes
                namespaces.pin_path(pinned["net"], pod.netns_path)

        sock_path = os.path.join(shim_dir, "shim.sock")
        try:
            os.unlink(sock_path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(sock_path)
        os.chmod(sock_path, 0o600)
        listener.listen(128)
        if adopt:
            shim = adopt_mod.adopt(pod, loop, listener)
            pinned_reply, pause_reply = dict(shim.pinned), shim.state.pause_pid
        statusfile.write_atomic(os.path.join(shim_dir, "shim.pid"), str(os.getpid()).encode(),
                                durable=False)
        if pause_pid is not None:  # the pause-holder outlives us: who stops it finds it here
            statusfile.write_atomic(os.path.join(shim_dir, "pause.pid"),
                                    str(pause_pid).encode(), durable=False)

        if not adopt:
            shim = Shim(pod, loop, pause_pid, pinned, listener)
            pinned_reply, pause_reply = pinned, pause_pid
    except BaseException as e:  # noqa: BLE001 - reported to the zygote
        if listener is not None:
            listener.close()
            try:
                os.unlink(sock_path)
            except OSError:
                pass
        if pause_pid is not None:
            try:
                os.kill(pause_pid, signal.SIGKILL)
                os.waitpid(pause_pid, 0)
            except OSError:
                pass
        if pinned:
            try:
                namespaces.unpin_all(pod.ns_dir)
                if pod.userns is not None and pod.netns_path:
                    namespaces.unpin(pod.netns_path)
            except OSError:
                pass
        _report(ready_fd, {"ok": False, "error": f"{type(e).__name__}: {e}"})
        os._exit(1)

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
            shim.begin_shutdown(SHUTDOWN_GRACE_ON_SIGTERM)
        shim.reap()

    loop.add_reader(wake_r, on_wakeup)
    if not _report(ready_fd, {"ok": True, "pid": os.getpid(), "pause_pid": pause_reply,
                              "ns": pinned_reply}) and not adopt:
        shim.begin_shutdown(0)  # the spawn was given up (timeout): undo everything
        os._exit(1)  # (an adopting shim serves on: the daemon finds it by its socket)
    syscalls.release_free_heap()  # the zygote's freed heap pages: not this pod's cost
    code = 0
    try:
        loop.run()
    except BaseException as e:  # noqa: BLE001
        print(f"pycri-shim {pod.pod_id}: fatal: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
        shim.stop_pause()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
