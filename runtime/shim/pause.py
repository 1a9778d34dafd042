"""The pause-holder: a child of the shim that owns the pod's namespaces.

fork_pause_holder() forks it (its report is read on the loop: runtime.shim.podsetup).
With a pod PID namespace the shim briefly unshares CLONE_NEWPID itself, forks (the child
is PID 1 of the new namespace and still the shim's direct child), then setns()
back to its own PID namespace for children created later. The child unshares
net/ipc/uts (or joins the network namespace the daemon already made and pinned
at pod.netns_path), sets the hostname, writes the sysctls from inside, reports on a
pipe and then execs the tiny pause program (runtime.shim.tinypause: pause() in a
loop with SIGCHLD ignored, so the kernel reaps the pod's orphans). Where that
program cannot run it stays in Python and blocks in sigwait(): SIGCHLD -> reap
zombies, SIGTERM/SIGINT -> exit. It does not die with the shim (no PDEATHSIG): a pod
outlives kill -9 of its shim; the shim's shutdown, or the daemon after a dead shim, stops it.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import NoReturn

from pycri_common.timeouts import scaled
from runtime import cgroups, syscalls
from runtime.cgroups.naming import pause_cgroup_path
from runtime.pod_spec import PodSpec
from runtime.shim import namespaces
from runtime.shim.loop import Loop, Timer
from runtime.shim.tinypause import exec_tiny_pause
from runtime.sysctls import apply_sysctls


class PauseError(Exception):
    pass


def _child(name: str, types: list[str], hostname: str, sysctls: dict[str, str], shim_pid: int,
           report_w: int, join_netns: str = "", userns_path: str = "") -> NoReturn:
    code = 1
    try:
        # no PDEATHSIG: the pod's namespaces (and, as PID 1 of a pod PID namespace, its
        # processes) outlive a shim killed with -9; whoever cleans the pod up stops it
        # (runtime.shim.shutdown, or the daemon by <shim_dir>/pause.pid)
        if "pid" not in types and os.getppid() != shim_pid:
            os._exit(1)  # the shim died while forking us
        signal.set_wakeup_fd(-1)
        os.closerange(3, report_w)
        os.closerange(report_w + 1, 1 << 20)  # a monitor's fds go high (RLIMIT_NOFILE)
        null = os.open("/dev/null", os.O_RDWR)  # do not keep the shim's log open
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.close(null)
        syscalls.set_process_name("pycri-pause")
        other = [t for t in types if t != "pid"]
        if userns_path:  # first: the namespaces unshared below then belong to it
            syscalls.setns_path(userns_path, syscalls.CLONE_NEWUSER)
            os.setgroups([])
            os.setresgid(0, 0, 0)  # the namespace's root (the mapped host IDs), not host root
            os.setresuid(0, 0, 0)
            join_netns = ""  # a network namespace of the pod's user namespace is made here
        if join_netns and "net" in other:  # made and pinned by the daemon (CNI runs meanwhile)
            syscalls.setns_path(join_netns, syscalls.CLONE_NEWNET)
            other.remove("net")
        if other:
            syscalls.unshare(namespaces.unshare_flags(other))
        if userns_path and "net" in other:
            namespaces.loopback_up()
        if "uts" in types and hostname:
            syscalls.sethostname(hostname)
        apply_sysctls(sysctls)
        _leave_host_root()
        os.write(report_w, b'{"ok": true}\n')
        exec_tiny_pause(name)  # returns only where the tiny program cannot run
        os.close(report_w)  # (a successful exec closes it: O_CLOEXEC)
        waited = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        for sig in waited:
            signal.signal(sig, signal.SIG_DFL)
        while True:
            if signal.sigwait(waited) == signal.SIGCHLD:
                syscalls.reap_children()
            else:
                code = 0
                break
    except BaseException as e:  # noqa: BLE001 - reported to the shim
        try:
            os.write(report_w, json.dumps({"ok": False, "error": str(e)}).encode() + b"\n")
        except OSError:
            pass
    os._exit(code)


def _leave_host_root() -> None:
    """A mount namespace of its own whose root is an empty read-only tmpfs. The pause-holder
    is PID 1 of a pod PID namespace: a container of that pod allowed to ptrace it (e.g.
    CAP_SYS_PTRACE) would otherwise reach the host's / through /proc/1/root and /proc/1/cwd.
    The old root is detached at once, so no copy of a host mount stays pinned here."""
    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    syscalls.mount("tmpfs", "/proc", "tmpfs", flags, "size=4k,mode=0555")
    os.chdir("/proc")
    syscalls.pivot_root(".", ".")
    syscalls.umount2(".", syscalls.MNT_DETACH)
    os.chdir("/")
    syscalls.mount(None, "/", None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY | flags)


#: test hook: the pause-holder of a pod whose hostname this names waits SLOW_PAUSE_S before
#: it reports (a set-up that hangs: the monitor serves its other pods meanwhile)
SLOW_ENV = "PYCRI_TEST_SLOW_PAUSE"
SLOW_PAUSE_S = 4.0
#: how long the monitor waits for a new pause-holder's report (s, scaled)
REPORT_TIMEOUT = 10.0


def fork_pause_holder(pod: PodSpec, types: list[str], userns_path: str = "") -> tuple[int, int]:
    """Fork the pause-holder in new namespaces `types`; returns (pid, report_r) at once: the
    caller reads report_r until EOF (it closes when the pause-holder has exec'd, or exited)
    and hands what it read to pause_report(), without blocking (runtime.shim.podsetup reads
    it on the loop). With `userns_path` (the pod's pinned user namespace) it joins that
    first, so its new net/ipc/uts namespaces belong to it."""
    shim_pid = os.getpid()
    r, w = os.pipe2(os.O_CLOEXEC)
    own_pid_ns = -1
    try:
        if "pid" in types:
            own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            syscalls.unshare(syscalls.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(r)
                if pod.hostname and os.environ.get(SLOW_ENV) == pod.hostname:
                    time.sleep(SLOW_PAUSE_S)
                _child(pod.pod_id, types, pod.hostname, dict(pod.sysctls), shim_pid, w,
                       join_netns=pod.netns_path, userns_path=userns_path)
        finally:
            if own_pid_ns >= 0:
                syscalls.setns(own_pid_ns, syscalls.CLONE_NEWPID)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
        if own_pid_ns >= 0:
            os.close(own_pid_ns)
    os.set_blocking(r, False)
    return pid, r


def pause_report(data: bytes) -> str:
    """What the report pipe said: "" when the pause-holder is set up, else why not."""
    try:
        msg = json.loads(data.split(b"\n")[0]) if data else None
    except ValueError:
        msg = None
    if msg and msg.get("ok"):
        return ""
    return str((msg or {}).get("error") or "pause-holder exited during set-up")


def kill_child(loop: Loop, pid: int, pod: PodSpec, log: Callable[[str], None],
               unclaimed: dict[int, int], timeout: float = 5.0) -> None:
    """SIGKILL our child `pid` (a pause-holder whose pod's set-up failed) and, on the loop,
    reap it once its pidfd says it exited (bounded by `timeout`), then remove its cgroup.
    Registered as nobody's (the pod is gone by then); its exit goes nowhere else."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1
    try:
        if fd >= 0:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if fd < 0:
        unclaimed.pop(pid, None)
        return
    timer: list[Timer] = []

    def gone() -> None:
        loop.forget(fd)
        os.close(fd)
        if timer:
            timer[0].cancel()
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the monitor already
            unclaimed.pop(pid, None)
        remove_pause_cgroup(pod, log)

    prev, loop.owner = loop.owner, None
    try:
        loop.add_reader(fd, gone)
        timer.append(loop.call_later(scaled(timeout), gone))
    finally:
        loop.owner = prev


def _pause_cgroup(pod: PodSpec) -> tuple[str, str] | None:
    """(pod cgroup, the pause-holder's cgroup) from pod.cgroup, or None without one. With
    cgroup v2 the pause-holder gets a leaf of its own (see naming.pause_cgroup_path)."""
    if pod.cgroup is None or not pod.cgroup.path:
        return None
    path = pod.cgroup.path
    return path, pause_cgroup_path(path, pod.cgroup.driver, pod.pod_id, cgroups.detect_mode())


def join_pod_cgroup(pod: PodSpec, pid: int, log: Callable[[str], None]) -> None:
    """Put the pause-holder into the pod cgroup the daemon made (best effort, like the
    sandbox container of containerd; a failure is logged in shim.log)."""
    found = None
    if pod.cgroup is not None and pod.cgroup.driver == "systemd":
        return  # the daemon starts its scope with this pid (cri_server.systemd_units)
    try:
        found = _pause_cgroup(pod)
        if found is not None:
            if found[1] != found[0]:
                cgroups.create_cgroup(found[1])
            cgroups.attach(found[1], pid)
    except Exception as e:  # noqa: BLE001
        where = found[1] if found else "of the pod"
        log(f"pod {pod.pod_id}: pause-holder not moved to cgroup {where}: {e}")


def remove_pause_cgroup(pod: PodSpec, log: Callable[[str], None]) -> None:
    """v2: remove the pause-holder's own leaf cgroup once it is gone (best effort; the pod
    cgroup's removal by the daemon recurses anyway)."""
    if pod.cgroup is not None and pod.cgroup.driver == "systemd":
        return  # systemd removes the scope's cgroup once it is empty
    try:
        found = _pause_cgroup(pod)
        if found is not None and found[1] != found[0]:
            cgroups.remove_cgroup(found[1], timeout=1.0)
    except Exception as e:  # noqa: BLE001 - best effort; the pod cgroup removal recurses
        log(f"pod {pod.pod_id}: pause cgroup not removed: {e}")
