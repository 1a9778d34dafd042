"""Container cgroup hooks of the shim (runtime.cgroups; the container init creates the cgroup).

- OOM-kill detection: runtime.cgroups.oom_kill_count(spec.cgroup.path) is read when
  the container starts and when it exits by SIGKILL; a higher count means "OOMKilled".
  Without a cgroup path an OOM kill is reported as "Error" with exit code 137.
- cgroup v1 OOM watcher (as containerd's v1 OOM watcher): v1's oom_kill count is per
  cgroup (not hierarchical), and under the systemd driver the container's own cgroup can be
  gone (systemd removes an emptied scope) before the exit is seen. So watch() registers an
  eventfd on the container's memory.oom_control (cgroup.event_control) at start; the kernel
  signals it on an OOM in that cgroup and once more when the cgroup is removed. A signal
  while the cgroup is still there, or two or more signals, mean "OOM seen"
  (Container.oom_seen); a SIGKILL exit after that is "OOMKilled". The count is not compared
  on a signal: the kernel notifies before it kills (and counts). unwatch() at the exit;
  stdio.release_fds closes Container.oom_efd on every other path.
- remove_container_cgroup(): the container's cgroup is removed once it exited (after the
  OOM check), as runc delete does in containerd."""
from __future__ import annotations

import importlib
import os
import signal

from runtime.container_spec import ContainerSpec
from runtime.shim.loop import Loop
from runtime.shim.records import Container


def _cgroup_path(spec: ContainerSpec) -> str | None:
    return spec.cgroup.path if spec.cgroup is not None else None


def _oom_count_path(spec: ContainerSpec) -> str | None:
    """systemd driver: systemd removes a scope's cgroup as soon as it is empty, which can be
    before the shim reads it after the exit, so the count is the pod slice's (cgroup v2's
    memory.events is hierarchical): a SIGKILLed container whose pod saw an OOM kill meanwhile."""
    path = _cgroup_path(spec)
    if (path and spec.cgroup is not None and spec.cgroup.driver == "systemd"
            and _v1_memory_dir(spec) is None):  # v1: per-cgroup counts, and the watcher
        return path.rsplit("/", 1)[0] or "/"
    return path


def _v1_memory_dir(spec: ContainerSpec) -> str | None:
    """The container's memory cgroup dir on cgroup v1 (or hybrid), else None."""
    path = _cgroup_path(spec)
    if not path:
        return None
    try:
        cg = importlib.import_module("runtime.cgroups").open_cgroup(path)
        if cg.version != 1 or "memory" not in cg.hierarchies:
            return None
        return str(cg.dir("memory"))
    except Exception:  # noqa: BLE001 - detection is best effort
        return None


def watch(loop: Loop, c: Container) -> None:
    """cgroup v1: register an OOM eventfd on c's memory cgroup (c.oom_efd, a reader on loop).
    Best effort: without it detection is the count comparison alone."""
    memory_dir = _v1_memory_dir(c.spec)
    if memory_dir is None or c.oom_efd >= 0:
        return
    try:
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
    except OSError:
        return
    try:
        cfd = os.open(os.path.join(memory_dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            wfd = os.open(os.path.join(memory_dir, "cgroup.event_control"),
                          os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(wfd, f"{efd} {cfd}".encode())
            finally:
                os.close(wfd)
        finally:
            os.close(cfd)  # the kernel keeps what it needs; only the eventfd stays open
    except OSError:
        os.close(efd)
        return
    c.oom_efd = efd
    loop.add_reader(efd, lambda: _notified(loop, c, memory_dir))


def _notified(loop: Loop, c: Container, memory_dir: str) -> None:
    """The eventfd fired (or may have): an OOM in c's cgroup, or the cgroup was removed."""
    if c.oom_efd < 0:
        return
    try:
        signals = os.eventfd_read(c.oom_efd)
    except BlockingIOError:
        return
    except OSError:
        unwatch(loop, c)
        return
    try:
        with open(os.path.join(memory_dir, "memory.oom_control"), "rb") as f:
            f.read()
        present = True
    except OSError:
        present = False
    if present or signals >= 2:  # the removal signals once, after the dir is gone
        c.oom_seen = True
    if not present:
        unwatch(loop, c)  # removed: the kernel dropped the registration


def unwatch(loop: Loop, c: Container) -> None:
    if c.oom_efd >= 0:
        loop.forget(c.oom_efd)
        try:
            os.close(c.oom_efd)
        except OSError:
            pass
        c.oom_efd = -1


def oom_kill_count(spec: ContainerSpec) -> int | None:
    path = _oom_count_path(spec)
    if not path:
        return None
    try:
        cgroups = importlib.import_module("runtime.cgroups")
    except ImportError:
        return None
    fn = getattr(cgroups, "oom_kill_count", None)
    if fn is None:
        return None
    try:
        return int(fn(path))
    except Exception:  # noqa: BLE001 - detection is best effort
        return None


def remove_container_cgroup(spec: ContainerSpec) -> str | None:
    """Remove the container's cgroup after it exited, as runc delete does (the init creates
    it; contract 5 of docs/architecture.md). Returns an error message, or None."""
    path = _cgroup_path(spec)
    if not path or (spec.cgroup is not None and spec.cgroup.driver == "systemd"):
        return None  # systemd removes an empty scope's cgroup; the daemon stops the unit
    try:
        cgroups = importlib.import_module("runtime.cgroups")
        cgroups.remove_cgroup(path, timeout=1.0)
    except Exception as e:  # noqa: BLE001 - reported by the caller, never fatal
        return f"removing cgroup {path}: {e}"
    return None


def was_oom_killed(loop: Loop, c: Container, exit_signal: int) -> bool:
    """At c's exit (before its cgroup is removed): a SIGKILL after an OOM seen by the watcher
    or with a risen count. Ends the watch."""
    if c.oom_efd >= 0:
        memory_dir = _v1_memory_dir(c.spec)
        if memory_dir is not None:
            _notified(loop, c, memory_dir)  # a signal queued beside the exit
        unwatch(loop, c)
    if exit_signal != signal.SIGKILL:
        return False
    if c.oom_seen:
        return True
    now = oom_kill_count(c.spec)
    if now is None:
        return False
    return now > (c.oom_count_at_start or 0)
