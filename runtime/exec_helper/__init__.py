"""pycri-exec: an exec's last steps in C (exec_helper.c), planned by the shim.

A process the shim forks for ExecSync/Exec used to do everything in Python after the fork
(runtime.container_init.exec_into): every object it touches is a copy-on-write fault of the
shim's memory, ~1,100 of them, 3-6 ms before its execve here. Now the shim computes the plan
before the fork (`prepare`: the merged process, the container's user as its init resolved
it, the namespaces to join as open fds, the v1 cgroup files, rlimits, capability masks, the
seccomp program) and the child, once its stdio is in place, execs this program
(`exec_plan`), which only makes the system calls.

The Python path stays for what the plan does not cover: a pod user namespace, an exec with
its own user, a container whose user its init never reported (one a successor monitor
adopted), a unified-hierarchy cgroup the fork could not clone into, and a host without a
C compiler. Both paths report the same way (contract 5, docs/architecture.md).

Built like the keeper (runtime.cbuild): `python3 -m runtime.exec_helper` (scripts/setup.sh),
or on first use; PYCRI_EXEC_HELPER=<path> names a prebuilt one.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import json
import os
import resource
from dataclasses import dataclass, field
from typing import Any, NoReturn

from runtime import apparmor, cbuild, rlimits, seccomp, syscalls
from runtime.capability_names import CAPABILITY_NUMBERS, capabilities_to_mask, last_cap
from runtime.cgroups import mode as cgmode
from runtime.cgroups.manager import V1Cgroup, open_cgroup
from runtime.container_spec import ContainerSpec, ProcessSpec

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "exec_helper.c")
VSPAWN_SOURCE = os.path.join(HERE, "vspawn.c")
VSPAWN_CFLAGS = ("-O2", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                 "-Wl,--build-id=none", "-s")
CFLAGS = ("-O2", "-static", "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-s")
COMM = "pycri-exec"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PLAN_FD = 3
REPORT_FD = 4
FIRST_NS_FD = 5

# joined in this order, the mount namespace last (as container_init._join_container_namespaces;
# pid: the shim forks into it, user: a pod user namespace takes the Python path)
_NAMESPACES = (("ipc", syscalls.CLONE_NEWIPC), ("uts", syscalls.CLONE_NEWUTS),
               ("net", syscalls.CLONE_NEWNET), ("cgroup", syscalls.CLONE_NEWCGROUP),
               ("mnt", syscalls.CLONE_NEWNS))


class ExecHelperUnavailable(RuntimeError):
    pass


@functools.cache
def binary() -> str:
    """The helper to exec: $PYCRI_EXEC_HELPER, else our build (built now when missing)."""
    try:
        return cbuild.prebuilt_or_build("PYCRI_EXEC_HELPER", SOURCE, CFLAGS, COMM)
    except cbuild.BuildFailed as e:
        raise ExecHelperUnavailable(str(e)) from None


def available() -> bool:
    try:
        binary()
    except ExecHelperUnavailable:
        return False
    _vspawn()   # built now too (without it the child is forked)
    return True


@functools.cache
def _vspawn() -> Any:
    """vspawn.c as a ctypes library, or None (no compiler: the shim forks instead)."""
    try:
        path = cbuild.build(VSPAWN_SOURCE, VSPAWN_CFLAGS, "libpycri-vspawn",
                            "let the shim fork its exec children")
        lib = ctypes.CDLL(path, use_errno=True)
    except (cbuild.BuildFailed, OSError):
        return None
    lib.pycri_vspawn.restype = ctypes.c_long
    lib.pycri_vspawn.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p),
                                 ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_int),
                                 ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    return lib


def spawn(plan: Plan, stdio: tuple[int, int, int], report_fd: int,
          cgroup_path: str | None) -> int | None:
    """Start the helper on `plan` without a fork (vspawn.c: clone3 CLONE_VM|CLONE_VFORK,
    into the unified hierarchy's `cgroup_path` when there is one); its pid, or None where it
    cannot (no library, a kernel or filter refusing clone3, the cgroup gone or an inner
    node, the helper not executable): the caller forks then. The caller's pid_for_children
    is the child's pid namespace; the caller keeps (and closes) every fd it passed."""
    lib = _vspawn()
    if lib is None:
        return None
    root = cgmode.unified_root(cgmode.CGROUP_ROOT)
    cgroup_fd = -1
    if cgroup_path is not None and root is not None:
        try:
            cgroup_fd = os.open(os.path.join(root, cgroup_path.lstrip("/")),
                                os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None
    try:
        fds = [*stdio, plan.memfd, report_fd, *plan.ns_fds]
        err = ctypes.c_int(0)
        pid = lib.pycri_vspawn(binary().encode(), (ctypes.c_char_p * 2)(COMM.encode(), None),
                               (ctypes.c_char_p * 1)(None), (ctypes.c_int * len(fds))(*fds),
                               len(fds), cgroup_fd, ctypes.byref(err))
    finally:
        if cgroup_fd >= 0:
            os.close(cgroup_fd)
    if pid < -1:   # it could not exec: it has exited
        try:
            os.waitpid(-pid - 2, 0)
        except ChildProcessError:
            pass
        return None
    return int(pid) if pid > 0 else None


@dataclass
class Plan:
    """What one exec's child hands to the helper: the plan (a memfd) and the namespace fds
    it names. The shim closes its copies after the fork (close())."""

    memfd: int
    ns_fds: list[int] = field(default_factory=list)

    def fds(self) -> tuple[int, ...]:
        return (self.memfd, *self.ns_fds)

    def close(self) -> None:
        for fd in self.fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.memfd, self.ns_fds = -1, []


def prepare(container_pid: int, spec: ContainerSpec, proc: ProcessSpec,
            own_user: bool, user: dict[str, Any], home: str | None,
            nofile: tuple[int, int] | None = None) -> Plan | None:
    """The plan of an exec of `proc` (the container's process merged with the exec's) into
    the container whose process is `container_pid`, or None where the Python path must run
    (the module's docstring). `user`/`home`: what the container's init resolved; `nofile`:
    the RLIMIT_NOFILE the shim's children get back (it raised its own)."""
    if own_user or spec.userns is not None or home is None or not user or not available():
        return None
    try:
        uid, gid = int(user["uid"]), int(user["gid"])
        groups = [int(g) for g in user.get("groups", [])]
    except (KeyError, TypeError, ValueError):
        return None
    profile = apparmor.resolve_profile(proc.apparmor_profile)
    records: list[str] = []
    if nofile is not None:
        records.append(f"rlimit={resource.RLIMIT_NOFILE} {nofile[0]} {nofile[1]}")
    cg = open_cgroup(spec.cgroup.path) if spec.cgroup is not None else None
    if isinstance(cg, V1Cgroup):   # the unified hierarchy's cgroup: cloned into by the fork
        records += [f"cgroup={d}/tasks" for d in sorted({cg.dir(c) for c in cg.hierarchies})]
    for lim in proc.rlimits:
        soft, hard = (-1 if v == resource.RLIM_INFINITY or v < 0 else v
                      for v in (lim.soft, lim.hard))
        records.append(f"rlimit={rlimits.resource_number(lim.type)} {soft} {hard}")
    if proc.oom_score_adj is not None:
        records.append(f"oom={int(proc.oom_score_adj)}")
    ns_fds = _namespaces_to_join(container_pid)
    try:
        records += [f"ns={FIRST_NS_FD + i} {flag}" for i, (_, flag) in enumerate(ns_fds)]
        env = list(proc.env)
        if not any(kv.startswith("HOME=") for kv in env):
            env.append(f"HOME={home}")
        if proc.tty:
            records.append("tty=1")
        records.append(f"cwd={proc.cwd}")
        path = next((kv[5:] for kv in env if kv.startswith("PATH=")), DEFAULT_PATH)
        records.append(f"path={path}")
        if profile:
            records.append(f"apparmor={profile}")
        if spec.seccomp:
            records.append(f"seccomp={seccomp.compiled(spec.seccomp).program().hex()}")
            if proc.no_new_privs:
                records.append("seccomp_late=1")
        have = syscalls.capget().permitted   # the child's: it inherits ours
        caps = proc.capabilities
        records += [f"bounding={capabilities_to_mask(list(caps.bounding)):x}",
                    f"last_cap={last_cap()}", f"uid={uid}", f"gid={gid}",
                    f"groups={','.join(str(g) for g in groups)}",
                    "caps=" + " ".join(f"{capabilities_to_mask(list(names)) & have:x}" for names
                                       in (caps.effective, caps.permitted, caps.inheritable))]
        records += [f"ambient={CAPABILITY_NUMBERS[n]}" for n in caps.ambient
                    if have & (1 << CAPABILITY_NUMBERS[n])]
        if proc.no_new_privs:
            records.append("nnp=1")
        records.append("ready=" + json.dumps({"ready": True, "user": {
            "uid": uid, "gid": gid, "groups": groups}}))
        records += [f"arg={a}" for a in proc.args]
        records += [f"env={e}" for e in env]
        memfd = _memfd_with(b"".join(r.encode() + b"\0" for r in records))
    except BaseException:
        for _, fd in ns_fds:
            os.close(fd)
        raise
    return Plan(memfd, [fd for fd, _ in ns_fds])


def _namespaces_to_join(pid: int) -> list[tuple[int, int]]:
    """(open fd, CLONE_NEW* flag) of each namespace of `pid` that is not ours, in join order."""
    from pycri_common.errors import InvalidArgument
    out: list[tuple[int, int]] = []
    try:
        for name, flag in _NAMESPACES:
            try:
                theirs = os.stat(f"/proc/{pid}/ns/{name}")
            except FileNotFoundError:
                raise InvalidArgument(f"exec: container process {pid} is gone") from None
            ours = os.stat(f"/proc/self/ns/{name}")
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                out.append((os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag))
    except BaseException:
        for fd, _ in out:
            os.close(fd)
        raise
    return out


def _memfd_with(data: bytes) -> int:
    fd = os.memfd_create("pycri-exec-plan", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def exec_plan(plan: Plan, report_fd: int) -> NoReturn:
    """In the forked child, stdio on 0-2: the plan at fd 3, the report pipe at 4, the
    namespaces from 5, everything else closed, execve the helper. Raises (the caller
    reports it) only when the helper cannot be exec'd."""
    srcs = [plan.memfd, report_fd, *plan.ns_fds]
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 64) for fd in srcs]
    for target, fd in enumerate(high, start=PLAN_FD):
        os.dup2(fd, target, inheritable=True)
    os.closerange(PLAN_FD + len(high), 0x7FFFFFFF)
    try:
        os.execve(binary(), [COMM], {})
    except BaseException as e:  # noqa: BLE001 - the report pipe is at REPORT_FD now
        try:
            os.write(REPORT_FD, json.dumps({"error": f"exec init: cannot exec {COMM}: {e}",
                                            "kind": "PycriError"}).encode() + b"\n")
        finally:
            os._exit(1)
    os._exit(1)
