"""Re-adoption: a successor shim takes back a pod whose shim died (kill -9), from what is on
disk and from the processes that outlived it (docs/architecture.md, "What survives kill -9
of what").

`adopt(pod, loop, listener)` builds the per-pod Shim (PodState, Containers, Exits, ...) of a
running pod without making anything: no pause-holder, no namespace, no container is created,
nothing is pinned again. Per pod, so a process that hosts many pods in one loop can call it
for each of them. What it takes:

- the pause-holder named by <shim_dir>/pause.pid, held by a pidfd checked by its command line
  (`pycri-pause <pod id>`); no longer our child, so watched and stopped by that pidfd;
- the pinned namespaces as they are (<ns_dir>/<type>, the daemon's netns path);
- per container, its status file (<cid>.json), its spec (<cid>.spec, written by the shim at
  create) and its keeper (<cid>.keeper, `runtime.keeper.open_keeper`: pidfd + command line).
  From a live keeper it takes copies of the exit pipe's read end and of the output pipe ends
  (or the pty master) with pidfd_getfd(2) (keeper fds 5, 6, 7: runtime/keeper/keeper.c), so
  what the container wrote meanwhile is read from the pipes and logged (the CRI log reopened
  in append mode), and the exit pipe's EOF says the keeper recorded the exit, as for a
  container the shim made itself. An exit recorded while no shim ran (<cid>.exit) becomes the
  container's exit with its real status. The keeper is watched by its pidfd.

Rules (what a dead shim cannot hand over):
- stdin of a container with pipes is closed for good (only the dead shim held its write
  end); with a tty stdin goes on through the pty master the keeper holds.
- a created container whose shim died is gone: its init saw its gate close and exited 1
  (recorded by its keeper), so it cannot be started.
- exec processes of the dead shim are not adopted: they run on in the container (and die
  with it: StopContainer kills its cgroup); their ExecSync/Exec calls have failed already.
- a container whose keeper died too (SIGKILL) while no shim ran cannot be watched any more:
  it is recorded exited with 255 and what is left in its cgroup is killed.
- output: the shim consumes a chunk from a pipe only after it wrote it to the log
  (runtime.shim.stdio.peek: tee(2), then read(2); runtime.shim.crilog writes an unterminated
  chunk as a P record at once), so a kill -9 loses nothing; one that lands between the log's
  write(2) and the consuming read(2) logs that chunk twice. A pty cannot be peeked at: a
  tty container can lose the one chunk between read(2) and write(2).
"""
from __future__ import annotations

import os
import signal
import socket
from typing import Any

from pycri_common.errors import InvalidArgument
from runtime import keeper as keeper_mod
from runtime import proc, syscalls
from runtime.container_spec import ContainerSpec
from runtime.pod_spec import PodSpec
from runtime.shim import namespaces, oom, statusfile, stdio
from runtime.shim.crilog import CriLogWriter
from runtime.shim.loop import BufferedWriter, Loop
from runtime.shim.podstate import close_fd
from runtime.shim.protocol import ContainerState
from runtime.shim.records import Container, State
from runtime.shim.server import Shim

PAUSE_COMM = "pycri-pause"


#: test hook: the first adoption (in this process) of a pod whose hostname this names fails
#: once everything of it is registered on the loop; the next one succeeds (a transient failure)
FAULT_ENV = "PYCRI_TEST_FAIL_ADOPT_ONCE"
_faulted: set[str] = set()


class AdoptError(RuntimeError):
    """The pod cannot be adopted (its pause-holder or a pinned namespace is gone)."""


def adopt(pod: PodSpec, loop: Loop, listener: socket.socket, **shim_kw: Any) -> Shim:
    """The Shim of `pod`, rebuilt from disk and from its live keepers, serving `listener`
    (shim_kw goes to Shim: the monitor's log, unclaimed, on_done)."""
    pause_pid, pause_fd = _take_pause(pod)
    try:
        pinned = pinned_namespaces(pod)
        shim = Shim(pod, loop, pause_pid, pinned, listener, **shim_kw)
    except BaseException:
        close_fd(pause_fd)
        raise
    state = shim.state
    try:
        if pause_pid is not None:
            state.pids.pop(pause_pid, None)  # not our child: its pidfd says when it is gone
            state.pause_pidfd = pause_fd
            loop.add_reader(pause_fd, lambda: _pause_gone(shim))
        states = statusfile.read_states(pod.shim_dir)
        for cid, obj in sorted(states.items()):
            try:
                _adopt_container(shim, cid, obj)
            except Exception as e:  # noqa: BLE001 - one container must not stop the adoption
                state.log(f"pod {pod.pod_id}: container {cid} not adopted: "
                          f"{type(e).__name__}: {e}")
        _end_unfinished_creates(pod.shim_dir, set(states))
        if pod.hostname and os.environ.get(FAULT_ENV) == pod.hostname \
                and pod.pod_id not in _faulted:
            _faulted.add(pod.pod_id)
            raise AdoptError(f"{FAULT_ENV}: failing the first adoption of pod {pod.pod_id}")
    except BaseException:
        shim.release()  # whatever it registered goes: no half-adopted pod stays behind
        raise
    return shim


def _end_unfinished_creates(shim_dir: str, known: set[str]) -> None:
    """A keeper without a status file is a create the dead shim never finished (its init had
    not reported ready; the daemon's CreateContainer failed): nobody will start it, so its
    keeper is killed (its init, at the gate, exits with the gate closed) and its files go."""
    cdir = statusfile.containers_dir(shim_dir)
    try:
        names = os.listdir(cdir)
    except OSError:
        return
    for name in names:
        cid = name[:-len(".keeper")] if name.endswith(".keeper") else ""
        if cid and cid not in known:
            keeper_mod.kill_keeper(cdir, cid)
            statusfile.remove_state(shim_dir, cid)


def _take_pause(pod: PodSpec) -> tuple[int | None, int]:
    """(pid, pidfd) of the pod's pause-holder; (None, -1) for a pod without one."""
    if not namespaces.pod_namespace_types(pod):
        return None, -1
    try:
        with open(os.path.join(pod.shim_dir, "pause.pid")) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pid = 0
    if pid <= 0:
        raise AdoptError(f"pod {pod.pod_id}: no pause.pid in {pod.shim_dir}")
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        raise AdoptError(f"pod {pod.pod_id}: its pause-holder (pid {pid}) is gone") from None
    if proc.cmdline(pid)[:2] != [PAUSE_COMM, pod.pod_id] or proc.ended(pid):
        os.close(fd)
        raise AdoptError(f"pod {pod.pod_id}: pid {pid} is not its pause-holder any more")
    return pid, fd


def pinned_namespaces(pod: PodSpec) -> dict[str, str]:
    """type -> pinned path, as the monitor pinned them (runtime.shim.podsetup)."""
    pinned: dict[str, str] = {}
    if pod.userns is not None:
        pinned["user"] = os.path.join(pod.ns_dir, "user")
    for t in namespaces.pod_namespace_types(pod):
        joined = t == "net" and pod.userns is None and pod.netns_path
        pinned[t] = pod.netns_path if joined else os.path.join(pod.ns_dir, t)
    for t, path in pinned.items():
        if not os.path.exists(path):
            raise AdoptError(f"pod {pod.pod_id}: its {t} namespace is not pinned at {path}")
    return pinned


def _pause_gone(shim: Shim) -> None:
    state = shim.state
    shim.loop.forget(state.pause_pidfd)
    close_fd(state.pause_pidfd)
    state.pause_pidfd = -1
    state.pause_alive = False


def _adopt_container(shim: Shim, cid: str, obj: dict[str, Any]) -> None:
    pod, loop = shim.state, shim.loop
    try:
        st = ContainerState.from_json(obj)
        spec = ContainerSpec.from_json(statusfile.read_spec(pod.shim_dir, cid))
    except InvalidArgument as e:
        raise AdoptError(f"status file or spec unusable: {e}") from None
    c = Container(cid, spec)
    c.state = State(st.state)
    c.pid, c.created_at, c.started_at = st.pid, st.created_at, st.started_at
    c.finished_at, c.exit_code, c.reason, c.message = (st.finished_at, st.exit_code,
                                                       st.reason, st.message)
    cdir = statusfile.containers_dir(pod.shim_dir)
    c.exit_path = keeper_mod.exit_path(cdir, cid)
    c.init_pid = proc.read_pid_file(keeper_mod.pid_path(cdir, cid))
    kfd = keeper_mod.open_keeper(c.init_pid, cid) if c.init_pid > 0 else -1
    if kfd >= 0 and proc.ended(c.init_pid):
        close_fd(kfd)
        kfd = -1
    pod.containers[cid] = c
    if kfd >= 0:
        c.keeper_pidfd = kfd
        c.keeper_alive = True
        loop.add_reader(kfd, lambda: _keeper_gone(shim, c))
    if c.state is State.EXITED:
        if c.keeper_alive:  # the dead shim wrote the exit but had not let the keeper go
            pod.signal_keeper(c, signal.SIGTERM)
        return
    if kfd < 0:
        _keeperless(shim, c)
        return
    _take_pipes(c, kfd, loop)
    if spec.log_path:
        try:
            c.log = CriLogWriter(spec.log_path, log_dir=spec.log_directory)
        except Exception as e:  # noqa: BLE001 - the container runs on; its status says why
            c.message = f"cannot reopen log file {spec.log_path}: {e}"
    pod.open_pidfd(c)
    os.set_blocking(c.exit_fd, False)
    loop.add_reader(c.exit_fd, lambda: shim.containers.keeper_recorded(c))
    stdio.watch_outputs(loop, c)
    if c.state is State.RUNNING:
        oom.watch(loop, c)  # from now on: an OOM before the adoption shows in the count only


def _take_pipes(c: Container, kfd: int, loop: Loop) -> None:
    """Copies of the keeper's exit pipe read end and of the container's output ends."""
    taken: list[int] = []   # all or nothing: a copy that fails closes those taken before
    try:
        for fd in (keeper_mod.EXIT_R_FD, keeper_mod.STDOUT_FD) + \
                (() if c.tty else (keeper_mod.STDERR_FD,)):
            taken.append(syscalls.pidfd_getfd(kfd, fd))
        if c.tty:
            taken += [os.dup(taken[1])] + ([os.dup(taken[1])] if c.stdin else [])
    except BaseException:
        for fd in taken:
            close_fd(fd)
        raise
    c.exit_fd = taken[0]
    if c.tty:
        c.pty_master, reader = taken[1], taken[2]
        os.set_blocking(reader, False)
        c.outputs[reader] = "stdout"
        c.stdin_writer = BufferedWriter(loop, taken[3]) if c.stdin else None
        return
    for fd, stream in ((taken[1], "stdout"), (taken[2], "stderr")):
        os.set_blocking(fd, False)
        c.outputs[fd] = stream


def _keeperless(shim: Shim, c: Container) -> None:
    """No keeper: its exit was recorded while no shim ran (and the keeper was let go or
    killed), or it was killed before the container ended (nobody can watch it any more)."""
    record = keeper_mod.read_exit(c.exit_path)
    if record is not None and record["pid"] == c.pid:
        shim.exits.container_exited(c, record["status"], record["finished_at"])
        return
    c.message = "its keeper died while no shim ran; the container was killed"
    shim.exits.container_exited(c, 255 << 8)  # which removes its cgroup: kills what is left


def _keeper_gone(shim: Shim, c: Container) -> None:
    loop = shim.loop
    loop.forget(c.keeper_pidfd)
    close_fd(c.keeper_pidfd)
    c.keeper_pidfd = -1
    c.keeper_alive = False
    if c.exit_fd >= 0:
        shim.containers.keeper_recorded(c)
    if c.state not in (State.EXITED, State.DISCARDED):  # SIGKILLed before the container
        c.message = "its keeper was killed; the container was killed"
        shim.exits.container_exited(c, 255 << 8)  # its cgroup removed: what is left killed
    shim.state.on_settled()
