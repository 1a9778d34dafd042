"""Forking container inits and exec processes from the (single-threaded) shim.

The child resets what the shim changed (signal dispositions - Python ignores
SIGPIPE and SIGXFSZ, the wakeup fd, the signal mask), puts its stdio on 0-2,
closes every other fd except the gate/report pipes (which are O_CLOEXEC) and
hands over to runtime.container_init (contract 5, docs/architecture.md). It never returns into the
shim's code: any failure is reported on report_fd and the child _exits.
runtime.container_init is imported in the child (the zygote pre-imports it).
"""
from __future__ import annotations

import errno
import json
import os
import resource
import signal
from typing import Any, NoReturn

from pycri_common.errors import FailedPrecondition
from runtime import exec_helper, seccomp, syscalls
from runtime import keeper as keeper_mod
from runtime.cgroups import mode as cgmode
from runtime.cgroups.clone_into import fork_in_cgroup
from runtime.container_spec import ContainerSpec

#: the RLIMIT_NOFILE children get back (runtime.shim.monitor raised its own; None: unchanged)
child_nofile: tuple[int, int] | None = None

_RESET_SIGNALS = (signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM,
                  signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _prepare_child(stdio: tuple[int, int, int], keep: tuple[int, ...]) -> None:
    signal.set_wakeup_fd(-1)
    for sig in _RESET_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    if child_nofile is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, child_nofile)
    # stdio fds are >= 3 (the shim's own 0-2 are always open), so no clobbering
    for target, fd in enumerate(stdio):
        os.dup2(fd, target, inheritable=True)
    keep_set = sorted(set(keep))
    low = 3
    for fd in keep_set:
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, 1 << 20)


def _report_failure(report_w: int, err: BaseException) -> NoReturn:
    kind = getattr(err, "kind", None) or "PycriError"
    try:
        os.write(report_w, json.dumps({"error": f"{type(err).__name__}: {err}",
                                       "kind": kind}).encode() + b"\n")
    finally:
        os._exit(1)


def _compile_seccomp(spec: ContainerSpec) -> None:
    """The spec's seccomp filter compiled here, in the shim, once per profile for the shim's
    life (seccomp.compiled caches by content, BPF program included): a child's cache is its
    copy of the shim's, so a compile there (~1.6 ms for the default profile, ~1.5 more to
    generate the program at load) would be paid by every init and every exec."""
    if spec.seccomp:
        seccomp.compiled(spec.seccomp)


def fork_container_init(spec: ContainerSpec, stdio: tuple[int, int, int], gate_r: int,
                        report_w: int, keeper: keeper_mod.Launch | None = None) -> int:
    """Fork; the child runs container_init.run(spec, (0, 1, 2), gate_r, report_w, keeper).

    With `keeper` the init's fork for the container's process (container_init._report_pid)
    makes the keeper of its child: the pid returned here is the keeper's then."""
    _compile_seccomp(spec)
    pid = os.fork()
    if pid:
        return pid
    try:
        _prepare_child(stdio, (gate_r, report_w, *(keeper.fds() if keeper else ())))
        from runtime import container_init

        container_init.run(spec, (0, 1, 2), gate_r, report_w, keeper=keeper)
        raise RuntimeError("container_init.run returned")
    except BaseException as e:  # noqa: BLE001
        _report_failure(report_w, e)


def _pid_ns_of(pid: int) -> tuple[int, int] | None:
    """fds of (pid's pid namespace, the shim's own) when they differ, else None."""
    try:
        theirs = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None   # gone: the child's own namespace join reports it
    ours = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    a, b = os.fstat(theirs), os.fstat(ours)
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        os.close(theirs)
        os.close(ours)
        return None
    return theirs, ours


def _exec_plan(container_pid: int, spec: ContainerSpec, process: dict[str, Any],
               user: dict[str, Any] | None, home: str | None) -> exec_helper.Plan | None:
    """Before the fork: the seccomp filter compiled, the exec's process checked and merged
    with the container's, and the helper's plan (None: the child takes the Python path)."""
    _compile_seccomp(spec)
    from runtime import container_init
    merged = container_init.merge_exec_process(spec.process, process)
    return exec_helper.prepare(container_pid, spec, merged, own_user=bool(process.get("user")),
                               user=user or {}, home=home, nofile=child_nofile)


def fork_exec(container_pid: int, spec: ContainerSpec, process: dict[str, Any],
              stdio: tuple[int, int, int], report_w: int, user: dict[str, Any] | None = None,
              home: str | None = None) -> int:
    """Fork (into the container's cgroup where the kernel can: runtime.cgroups.clone_into, and
    into the container's pid namespace: the shim points its children's pid namespace at it
    for this one fork, so the exec needs no second fork); the child, stdio on 0-2, execs
    the exec helper with its plan (runtime.exec_helper) or, where the plan does not cover
    the exec, runs container_init.exec_into(...). With a plan there is no fork at all where
    the kernel allows: exec_helper.spawn starts the helper sharing our memory until its
    execve (vspawn.c). `user`/`home`: the container's user as its init resolved it."""
    plan = _exec_plan(container_pid, spec, process, user, home)
    try:
        pid_ns = _pid_ns_of(container_pid)
    except BaseException:
        if plan is not None:
            plan.close()
        raise
    pid, joined = -1, False
    try:
        if pid_ns is not None:
            syscalls.setns(pid_ns[0], syscalls.CLONE_NEWPID)
        if plan is not None:   # no fork at all where the kernel lets us (vspawn.c)
            spawned = exec_helper.spawn(plan, stdio, report_w,
                                        spec.cgroup.path if spec.cgroup is not None else None)
            if spawned is not None:
                pid = spawned
                return pid
        pid, joined = fork_in_cgroup(spec.cgroup.path if spec.cgroup is not None else None)
    except OSError as e:
        if pid_ns is not None and e.errno == errno.ENOMEM:   # alloc_pid in a dying namespace
            raise FailedPrecondition(f"container process {container_pid} is exiting: its pid "
                                     "namespace takes no new process") from None
        raise
    finally:
        if pid_ns is not None:
            if pid != 0:
                # the shim's own children (and after a failed fork) go back to the shim's
                # namespace; the child could not go back (it is an ancestor of its own)
                syscalls.setns(pid_ns[1], syscalls.CLONE_NEWPID)
            for fd in pid_ns:
                os.close(fd)
        if plan is not None and pid != 0:
            plan.close()
    if pid:
        return pid
    try:
        _prepare_child(stdio, (report_w, *(plan.fds() if plan else ())))
        unified_left = (spec.cgroup is not None and not joined
                        and cgmode.unified_root(cgmode.CGROUP_ROOT) is not None)
        if plan is not None and not unified_left:
            exec_helper.exec_plan(plan, report_w)   # does not return
        from runtime import container_init

        container_init.exec_into(container_pid, spec, process, (0, 1, 2), report_w,
                                 in_cgroup=joined, in_pid_ns=pid_ns is not None)
        raise RuntimeError("container_init.exec_into returned")
    except BaseException as e:  # noqa: BLE001
        _report_failure(report_w, e)
