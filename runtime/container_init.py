"""Container init (contract 5 of docs/architecture.md): runs in a child the shim forks; never
starts threads. The spec is a parsed runtime.container_spec.ContainerSpec (contract 4).

run(spec, stdio, gate_fd, report_fd) -> NoReturn
  1. stdio onto 0-2, every other fd closed (report_fd and gate_fd kept, CLOEXEC), setsid.
  2. cgroup: create spec.cgroup.path, apply resources and device rules, join it (with a
     keeper the init does not join: the child of step 3's fork does, cloned into the
     unified hierarchy's cgroup by the fork, runtime.cgroups.clone_into, and moving only
     itself into the v1 ones, Cgroup.join_self).
  3. namespaces: join the listed ones that have a path (setns), unshare the new ones (then
     the hostname and spec.sysctls are set in them).
     With a "pid" entry the process forks once more: the parent writes {"pid": <child host
     pid>} to report_fd and exits 0 at once (the keeper - runtime/keeper/keeper.c, our parent
     and a child subreaper - or without one the shim reaps it and becomes the container's
     parent); otherwise {"pid": own pid} is written. With `keeper` (runtime.keeper.Launch)
     the process always forks there (pid namespace or not): its child is reported and goes
     on into the container's cgroup, the parent (which never entered it) execs the keeper, the
     container's parent from then on (runtime/keeper/keeper.c; the fork the pid namespace needs
     anyway, so a keeper costs no extra fork on that path).
  4. own mount namespace (+ cgroup namespace when listed without path): overlay rootfs, mounts
     in order, /dev nodes, devices, working dir, pivot_root, masked and read-only paths,
     read-only root, hostname.
     With spec.userns (a pod user namespace): layers and binds idmapped, what the init
     creates owned by the mapped root; then setns into the user namespace and a mount
     namespace of its own (the mounts become locked).
  5. user from the rootfs /etc/passwd,/etc/group; executable looked up in PATH; rlimits,
     oom_score_adj (clamped), AppArmor; seccomp compiled (loaded now when no_new_privs is off,
     since that needs CAP_SYS_ADMIN); bounding set, user, capabilities, ambient, no_new_privs.
  6. {"ready": true, "user": {"uid", "gid", "groups"}} on report_fd, then block on gate_fd:
     b"s" -> startContainer hooks, load seccomp (no_new_privs case) and execve;
     EOF/anything else -> exit 1.
  OCI hooks (spec.hooks, runtime.hooks): createRuntime hooks run in a helper forked in step 1
  (still in the runtime's namespaces and cgroup) when the init asks it to, after the mounts and
  before pivot_root; createContainer hooks then run from the init itself (container
  namespaces, host paths still visible); startContainer hooks after the gate opened.
  spec.intel_rdt: the init joins that resctrl group right after its cgroup (runtime.resctrl).
  Any failure: {"error": msg, "kind": "<errors.py class name>"} on report_fd, exit 1 (before
  ready; the cgroup created in step 2 is removed) or 127/126 when execve fails (not found /
  not executable).
  The shim must remove the container cgroup (runtime.cgroups.remove_cgroup) when it deletes
  the container; mounts vanish with the mount namespace.

exec_into(container_pid, spec, process, stdio, report_fd) -> NoReturn
  Same, for ExecSync/Exec: joins the container's cgroup and the namespaces of
  /proc/<container_pid>/ns/* (the user namespace after pid/cgroup, the mount namespace last;
  pid ns -> fork as above, {"pid": N}, unless in_pid_ns: the shim forked this process into
  the container's pid namespace already, runtime.shim.spawn.fork_exec), applies the container's
  user (process["user"] overrides), capabilities, no_new_privs, seccomp, rlimits, AppArmor;
  env = process["env"] if given else the container's; cwd = process["cwd"] or the container's
  (must exist); writes {"ready": ...} then execs process["args"] at once (no gate).
  `process` is the JSON object of the shim's exec operation, parsed by merge_exec_process.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import posixpath
import signal
import socket
import stat
import termios
from typing import Any, NoReturn

from pycri_common.errors import FailedPrecondition, InvalidArgument, PycriError
from runtime import (
    apparmor,
    capabilities,
    hooks,
    resctrl,
    rlimits,
    rootfs,
    syscalls,
    sysctls,
    userns,
)
from runtime import (
    keeper as keeper_mod,
)
from runtime.cgroups import clone_into, delegation, open_cgroup
from runtime.cgroups import mode as cgmode
from runtime.cgroups.manager import Cgroup
from runtime.container_spec import ContainerSpec, ProcessSpec, UserSpec
from runtime.seccomp import SeccompFilter, compiled
from runtime.syscalls import REAL, Syscalls
from runtime.users import ResolvedUser, read_text, resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_NS_FLAGS: dict[str, int] = {
    "network": syscalls.CLONE_NEWNET, "ipc": syscalls.CLONE_NEWIPC,
    "uts": syscalls.CLONE_NEWUTS, "pid": syscalls.CLONE_NEWPID,
    "mount": syscalls.CLONE_NEWNS, "cgroup": syscalls.CLONE_NEWCGROUP,
    "user": syscalls.CLONE_NEWUSER,
}
_PROC_NS_NAMES: dict[str, str] = {
    "ipc": "ipc", "uts": "uts", "network": "net", "cgroup": "cgroup", "pid": "pid",
    "user": "user", "mount": "mnt",
}


class _ExecFailed(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Reporter:
    def __init__(self, fd: int, keeper: keeper_mod.Launch | None = None) -> None:
        self.fd = fd
        self.keeper = keeper  # what the parent of the container's process execs (_report_pid)
        # the container's cgroup, when the container's process joins it right after the fork
        # in _report_pid (cloned into it where there is a unified hierarchy,
        # runtime.cgroups.clone_into) instead of the init joining it first
        self.clone_into: Cgroup | None = None
        self.in_cgroup = False  # this process is in the container's cgroup (cleanup leaves it)

    def send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        while data:
            n = os.write(self.fd, data)
            data = data[n:]


# --------------------------------------------------------------------------- entry points

def run(spec: ContainerSpec, stdio: tuple[int, int, int], gate_fd: int,
        report_fd: int, calls: Syscalls = REAL, keeper: keeper_mod.Launch | None = None
        ) -> NoReturn:
    reporter = _Reporter(report_fd, keeper)
    cgroup: Cgroup | None = None
    ready = False
    code = 1
    try:
        _make_non_dumpable(calls)
        _setup_stdio(stdio, keep=(gate_fd, report_fd, *(keeper.fds() if keeper else ())))
        # With a keeper the init (the keeper to be) never enters the container's cgroup: the
        # container's process joins it right after the fork (a keeper is never counted, frozen
        # or killed with its container), cloned into it on v2 and moving only itself on v1
        # (Cgroup.join_self): no threadgroup lock, no RCU grace period to wait for.
        clone = keeper is not None and spec.cgroup is not None
        helper = _HookHelper.start(spec) if spec.hooks.get("createRuntime") else None
        cgroup = _setup_cgroup(spec, join=not clone)
        reporter.in_cgroup = cgroup is not None and not clone
        if clone:
            reporter.clone_into = cgroup
        idmap = _open_userns(spec)
        if (idmap is not None and cgroup is not None and spec.cgroup is not None
                and cgroup_delegation(spec)):
            _delegate_cgroup(spec.cgroup.path, idmap)
        if spec.intel_rdt:  # a host path, before any namespace; children inherit the group
            resctrl.join(spec.intel_rdt, spec.id, os.getpid())
        _enter_namespaces(spec, reporter, calls)
        host_pid = _host_pid()
        seccomp_filter, argv0, env, user = _build_container(spec, calls, helper, host_pid,
                                                            idmap)
        if idmap is not None:
            _enter_userns(idmap, calls)
        if seccomp_filter is not None and not spec.process.no_new_privs:
            seccomp_filter.load()
        _apply_credentials(spec.process, user, calls)
        reporter.send({"ready": True, "user": user.as_report(), "home": user.home})
        ready = True
        if os.read(gate_fd, 1) != b"s":
            os._exit(1)
        os.close(gate_fd)
        hooks.run_hooks(spec.hooks, "startContainer", _hook_state(spec, "created", host_pid))
        if seccomp_filter is not None and spec.process.no_new_privs:
            seccomp_filter.load()
        _execve(argv0, spec.process.args, env)
    except BaseException as e:  # noqa: BLE001 - must never escape a forked child
        code = _report_failure(reporter, e, "container init")
    if cgroup is not None and not ready:
        # a systemd scope is the daemon's to stop (it holds the daemon's placeholder too)
        _leave_and_remove(cgroup, remove=spec.cgroup is None or spec.cgroup.driver != "systemd",
                          joined=reporter.in_cgroup)
    os._exit(code)



def _report_failure(reporter: _Reporter, exc: BaseException, what: str) -> int:
    """Reports why set-up or exec failed; returns the exit code of the forked child."""
    if isinstance(exc, _ExecFailed):
        _report_error(reporter, "FailedPrecondition", str(exc))
        return exc.code
    if isinstance(exc, PycriError):
        _report_error(reporter, exc.kind, str(exc))
    elif isinstance(exc, OSError):
        _report_error(reporter, "PycriError", f"{what}: {exc}")
    else:
        _report_error(reporter, "PycriError", f"{what}: {type(exc).__name__}: {exc}")
    return 1

def exec_into(container_pid: int, spec: ContainerSpec, process: dict[str, Any],
              stdio: tuple[int, int, int], report_fd: int,
              calls: Syscalls = REAL, in_cgroup: bool = False, in_pid_ns: bool = False
              ) -> NoReturn:
    """in_cgroup: the shim cloned this process into the container's cgroup already
    (runtime.cgroups.clone_into); in_pid_ns: the shim forked it into the container's pid
    namespace (runtime.shim.spawn.fork_exec), so it needs no fork to enter it and the shim
    knows its host pid."""
    reporter = _Reporter(report_fd)
    code = 1
    try:
        _make_non_dumpable(calls)
        proc = merge_exec_process(spec.process, process)
        _setup_stdio(stdio, keep=(report_fd,))
        seccomp_filter = compiled(spec.seccomp) if spec.seccomp else None
        profile = apparmor.resolve_profile(spec.process.apparmor_profile)
        if spec.cgroup is not None:
            _join_exec_cgroup(spec.cgroup.path, container_pid, unified_joined=in_cgroup)
        # with the host's privileges: a pod user namespace would not allow raising them
        rlimits.apply_rlimits(proc.rlimits)
        rlimits.apply_oom_score_adj(proc.oom_score_adj)
        _join_container_namespaces(container_pid, reporter, calls, report=not in_pid_ns)
        if proc.tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        user = _resolve_container_user(proc.user)
        env = _with_home(proc.env, user)
        try:
            rootfs.enter_cwd(proc.cwd, calls=calls)
        except InvalidArgument as e:
            raise InvalidArgument(f"exec: {e}") from e
        argv0 = _find_executable(proc.args[0], env)
        if profile:
            apparmor.set_exec_profile(profile)
        if seccomp_filter is not None and not proc.no_new_privs:
            seccomp_filter.load()
        _apply_credentials(proc, user, calls)
        reporter.send({"ready": True, "user": user.as_report()})
        if seccomp_filter is not None and proc.no_new_privs:
            seccomp_filter.load()
        _execve(argv0, proc.args, env)
    except BaseException as e:  # noqa: BLE001 - must never escape a forked child
        code = _report_failure(reporter, e, "exec init")
    os._exit(code)


# --------------------------------------------------------------------------- steps

def _report_error(reporter: _Reporter, kind: str, message: str) -> None:
    try:
        reporter.send({"error": message, "kind": kind})
    except OSError:
        pass


def _make_non_dumpable(calls: Syscalls) -> None:
    """Until execve (which makes the process dumpable again) we run the host's interpreter
    with the shim's pipes, in the container's PID namespace once joined, and from
    _apply_credentials on with the container's uid and capabilities: without this a root
    process of the pod could ptrace us (and e.g. write fake reports to the shim)."""
    calls.prctl(syscalls.PR_SET_DUMPABLE, 0)


_FD_LIMIT = 0x7FFFFFFF   # every fd: close_range(2) stops at the highest one open


def _setup_stdio(stdio: tuple[int, int, int], keep: tuple[int, ...]) -> None:
    """Default signal dispositions (Python ignores SIGPIPE/SIGXFSZ; execve would keep that),
    stdio onto 0,1,2, every other fd but `keep` (made CLOEXEC) closed; new session.
    Only the signals whose handler is not the default are reset (signal.getsignal makes no
    system call; a disposition Python did not set shows as None and is reset too): an exec
    runs this on its way, and 62 sigactions cost it ~0.3 ms."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP) or signal.getsignal(sig) is signal.SIG_DFL:
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for fd in keep:
        os.set_inheritable(fd, False)
    if tuple(stdio) != (0, 1, 2):
        # dup the sources above any target first, so dup2 cannot clobber one we still need
        tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in stdio]
        for target, fd in enumerate(tmp):
            os.dup2(fd, target, inheritable=True)
    low = 0
    for fd in sorted({0, 1, 2, *keep}):   # close_range(2) over the gaps, no /proc listing
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _FD_LIMIT)
    os.setsid()


def _setup_cgroup(spec: ContainerSpec, join: bool = True) -> Cgroup | None:
    """Creates (cgroupfs) or finds (systemd: the daemon started the scope) the container's
    cgroup, writes its resource files and device filter and (join) joins it."""
    if spec.cgroup is None:
        return None
    systemd = spec.cgroup.driver == "systemd"
    cg = open_cgroup(spec.cgroup.path)
    if systemd and not cg.exists():
        raise FailedPrecondition(f"the systemd scope of cgroup {spec.cgroup.path} is not there")
    cg.create(spec.cgroup.resources.to_json())
    try:
        allow = None if spec.privileged else list(rootfs.DEFAULT_DEVICE_RULES)
        cg.set_device_rules(allow)
        if join:
            cg.join_self()
    except BaseException:
        _leave_and_remove(cg, remove=not systemd, joined=join)
        raise
    return cg


def _open_userns(spec: ContainerSpec) -> userns.Idmap | None:
    """The pod's user namespace (an fd kept until it is joined), None without one."""
    u = spec.userns
    if u is None:
        return None
    try:
        fd = os.open(u.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidArgument(f"userns.path: cannot open {u.path}: {e.strerror}") from e
    return userns.Idmap(fd, u.maps.uid_map, u.maps.gid_map)


def _enter_userns(idmap: userns.Idmap, calls: Syscalls) -> None:
    """Join the pod's user namespace once the filesystem is built (idmapped mounts need the
    host's privileges), then move to a mount namespace of its own: the container's root
    gets the namespace's capabilities, and every mount made so far is locked (masked and
    read-only paths cannot be undone from inside)."""
    try:
        calls.setns(idmap.fd, syscalls.CLONE_NEWUSER)
    except OSError as e:
        raise InvalidArgument(f"userns.path: cannot join the pod's user namespace: "
                              f"{e.strerror}") from e
    finally:
        os.close(idmap.fd)
    calls.unshare(syscalls.CLONE_NEWNS)


def cgroup_delegation(spec: ContainerSpec) -> bool:
    """Whether the container's cgroup is delegated to its root (runtime.cgroups.delegation):
    cgroup v2, a pod user namespace, a new cgroup namespace and a read-write cgroup mount at
    /sys/fs/cgroup (the OCI runtime spec's conditions, as runc checks them; the CRI layer makes
    that mount read-write for these containers). v1 hierarchies are never delegated (the
    container sees them read-only)."""
    if spec.userns is None or spec.cgroup is None or cgmode.detect_mode() != "v2":
        return False
    if not any(ns.type == "cgroup" and ns.path is None for ns in spec.namespaces):
        return False
    return any(m.type == "cgroup" and posixpath.normpath(m.destination) == "/sys/fs/cgroup"
               and not m.readonly and "ro" not in m.options for m in spec.mounts)


def _delegate_cgroup(cgroup_path: str, idmap: userns.Idmap) -> None:
    """The container's cgroup directory and its delegatable files (cgroup.procs,
    cgroup.threads, cgroup.subtree_control, ...) belong to the mapped root, so the container
    can manage its own sub-cgroups; limits stay enforced from the host-owned files."""
    base = os.path.join(cgmode.CGROUP_ROOT, cgroup_path.lstrip("/"))
    delegation.delegate(base, idmap.root_uid, idmap.root_gid)


def _join_exec_cgroup(cgroup_path: str, container_pid: int, unified_joined: bool) -> None:
    """An exec'd process joins the container's cgroup (Cgroup.join_self; unified_joined: the
    shim cloned it into the unified hierarchy's). A delegated v2 cgroup may have become
    an inner node (the container moved itself into sub-cgroups and enabled controllers
    there: EBUSY, no processes in inner nodes): then it joins the cgroup of the container's
    init, as runc does."""
    cg = open_cgroup(cgroup_path)
    try:
        cg.join_self(unified_joined)
        return
    except InvalidArgument as e:
        cause = e.__cause__
        if cg.version != 2 or not (isinstance(cause, OSError) and cause.errno == errno.EBUSY):
            raise
        init_cgroup = _v2_cgroup_of(container_pid)
        if init_cgroup is None or not init_cgroup.startswith(cgroup_path.rstrip("/") + "/"):
            raise
    open_cgroup(init_cgroup).join_self()


def _v2_cgroup_of(pid: int) -> str | None:
    """The unified-hierarchy cgroup of `pid` as this process's cgroup namespace sees it."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip() or None
    except OSError:
        pass
    return None


def _leave_and_remove(cg: Cgroup, remove: bool = True, joined: bool = True) -> None:
    """Error path: move this process (if it joined) back to the root cgroup and remove what we
    created."""
    try:
        if joined:
            open_cgroup("/").join_self()
        if remove:
            cg.remove(timeout=0.5)
    except (OSError, PycriError):
        pass


def _report_pid(reporter: _Reporter, enter_pid_ns: bool) -> None:
    """Reports the host pid of the process that will exec (to the shim and to the keeper).
    Joining or creating a pid namespace only moves children into it: fork, report the child
    and exit (the keeper - or without one the shim -, a child subreaper, adopts it)."""
    launch = reporter.keeper
    if launch is not None:
        # the parent of the container's process becomes its keeper (runtime/keeper/keeper.c):
        # a subreaper from before the fork (kept across execve), out of the container's
        # cgroup, then execve; the child goes on, in the container's cgroup and in the pid
        # namespace when there is one
        syscalls.set_child_subreaper()
        into = reporter.clone_into
        child, joined = clone_into.fork_in_cgroup(into.path) if into else (os.fork(), False)
        if child:
            reporter.send({"pid": child})
            keeper_mod.exec_keeper(launch, child)
        if into is not None:
            into.join_self(unified_joined=joined)
            reporter.in_cgroup = True
        for fd in set(launch.fds()):
            os.close(fd)
        reporter.keeper = None
        os.setsid()
        return
    if not enter_pid_ns:
        reporter.send({"pid": os.getpid()})
        return
    child = os.fork()
    if child:
        reporter.send({"pid": child})
        os._exit(0)
    os.setsid()


def _enter_namespaces(spec: ContainerSpec, reporter: _Reporter, calls: Syscalls) -> None:
    """Join/create namespaces; fork for a pid namespace. Returns in the process that execs."""
    entries = spec.namespace_paths()
    new_flags = 0
    for ns_type in ("ipc", "uts", "network"):
        if ns_type not in entries:
            continue
        path = entries[ns_type]
        if path:
            _setns(calls, path, _NS_FLAGS[ns_type], ns_type)
        else:
            new_flags |= _NS_FLAGS[ns_type]
    cgroup_path = entries.get("cgroup")
    if cgroup_path:
        _setns(calls, cgroup_path, syscalls.CLONE_NEWCGROUP, "cgroup")
    if new_flags:
        calls.unshare(new_flags)
    if "pid" in entries:
        pid_path = entries["pid"]
        if pid_path:
            _setns(calls, pid_path, syscalls.CLONE_NEWPID, "pid")
        else:
            calls.unshare(syscalls.CLONE_NEWPID)
    _report_pid(reporter, enter_pid_ns="pid" in entries)
    if spec.process.tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    late = syscalls.CLONE_NEWNS
    if "cgroup" in entries and not entries["cgroup"]:
        late |= syscalls.CLONE_NEWCGROUP  # after joining the cgroup: it becomes our root
    calls.unshare(late)
    hostname = spec.hostname
    if hostname and "uts" in entries and not entries["uts"]:
        calls.sethostname(hostname)
    if spec.sysctls:  # still the host's /proc, whose /proc/sys is that of our namespaces
        try:
            sysctls.apply_sysctls(spec.sysctls)
        except OSError as e:
            raise InvalidArgument(f"sysctls: {e.strerror}") from None


def _setns(calls: Syscalls, path: str, flag: int, ns_type: str) -> None:
    try:
        calls.setns_path(path, flag)
    except OSError as e:
        raise InvalidArgument(f"namespaces[{ns_type}].path: cannot join {path}: "
                              f"{e.strerror}") from e


def _build_container(spec: ContainerSpec, calls: Syscalls, helper: _HookHelper | None = None,
                     host_pid: int = 0, idmap: userns.Idmap | None = None
                     ) -> tuple[SeccompFilter | None, str, list[str], ResolvedUser]:
    """Filesystem, pivot_root and everything that must be checked before `ready`."""
    proc = spec.process
    # host resources first: libseccomp and /sys/kernel/security are gone after pivot_root
    seccomp_filter = compiled(spec.seccomp) if spec.seccomp else None
    profile = apparmor.resolve_profile(proc.apparmor_profile)
    entries = spec.namespace_paths()
    own_cgroupns = "cgroup" in entries and not entries["cgroup"]
    host_cg = spec.cgroup.path if spec.cgroup is not None and not own_cgroupns else None
    root, cwd, rules = rootfs.prepare(spec, host_cg, calls, idmap)
    if rules and spec.cgroup is not None and not spec.privileged:
        cg = open_cgroup(spec.cgroup.path)
        cg.set_device_rules(list(rootfs.DEFAULT_DEVICE_RULES) + rules)
    if helper is not None:
        helper.run(_hook_state(spec, "creating", host_pid))
    hooks.run_hooks(spec.hooks, "createContainer", _hook_state(spec, "creating", host_pid))
    rootfs.finish(spec, root, calls)
    rootfs.enter_cwd(cwd, calls=calls)
    user = _resolve_container_user(proc.user)
    env = _with_home(proc.env, user)
    argv0 = _find_executable(proc.args[0], env)
    rlimits.apply_rlimits(proc.rlimits)
    rlimits.apply_oom_score_adj(proc.oom_score_adj)
    if profile:
        apparmor.set_exec_profile(profile)
    return seccomp_filter, argv0, env, user


def _host_pid() -> int:
    """Our pid as the host sees it: /proc is still the host's until pivot_root, and its
    /proc/self names the reader's pid in the proc mount's (the host's) pid namespace."""
    try:
        return int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        return os.getpid()


def _hook_state(spec: ContainerSpec, status: str, pid: int) -> dict[str, Any]:
    bundle = os.path.dirname(spec.rootfs.upper.rstrip("/"))
    return hooks.state(spec.id, status, pid, bundle, spec.annotations)


class _HookHelper:
    """A child forked before the init joins any namespace or cgroup: it runs the createRuntime
    hooks in the runtime's namespaces when the init sends it the state, and answers once."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    @classmethod
    def start(cls, spec: ContainerSpec) -> _HookHelper:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked helper
            code = 0
            try:
                ours.close()
                keep = theirs.fileno()
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                for name in os.listdir("/proc/self/fd"):
                    if int(name) not in (0, 1, 2, keep):
                        try:
                            os.close(int(name))
                        except OSError:
                            pass
                code = cls._serve(spec, theirs)
            finally:
                os._exit(code)
        theirs.close()
        return cls(pid, ours)

    @staticmethod
    def _serve(spec: ContainerSpec, sock: socket.socket) -> int:
        data = _recv_all(sock)
        if not data:
            return 0  # the init failed before it got there
        try:
            hooks.run_hooks(spec.hooks, "createRuntime", json.loads(data))
            answer: dict[str, Any] = {"ok": True}
        except PycriError as e:
            answer = {"error": str(e), "kind": e.kind}
        except Exception as e:  # noqa: BLE001 - reported to the init
            answer = {"error": f"createRuntime hooks: {e}", "kind": "PycriError"}
        sock.sendall(json.dumps(answer).encode())
        sock.shutdown(socket.SHUT_WR)
        return 0

    def run(self, oci_state: dict[str, Any]) -> None:
        try:
            self.sock.sendall(json.dumps(oci_state).encode())
            self.sock.shutdown(socket.SHUT_WR)
            data = _recv_all(self.sock)
        finally:
            self.sock.close()
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass  # forked by our parent before the pid-namespace fork: the shim reaps it
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {}
        if answer.get("ok"):
            return
        raise FailedPrecondition(str(answer.get("error") or "createRuntime hooks: the hook "
                                     "helper died"))


def _recv_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    chunks, n = [], 0
    while n < limit:
        b = sock.recv(65536)
        if not b:
            break
        chunks.append(b)
        n += len(b)
    return b"".join(chunks)


def _resolve_container_user(user: UserSpec) -> ResolvedUser:
    """Resolve against the container's /etc (we are inside its root already)."""
    return resolve_user(user, read_text("/etc/passwd"), read_text("/etc/group"))


def _with_home(env: tuple[str, ...], user: ResolvedUser) -> list[str]:
    if any(kv.startswith("HOME=") for kv in env):
        return list(env)
    return [*env, f"HOME={user.home}"]


def _find_executable(name: str, env: list[str]) -> str:
    """PATH lookup as execvp would do (PATH from the container env)."""
    if "/" in name:
        candidates = [name]
    else:
        path = next((kv[5:] for kv in env if kv.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for cand in candidates:
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return cand
        if "/" in name:
            raise _ExecFailed(126, f"process.args[0]: {name!r} is not an executable file")
    raise _ExecFailed(127, f"process.args[0]: executable file {name!r} not found in $PATH")


def _apply_credentials(proc: ProcessSpec, user: ResolvedUser, calls: Syscalls) -> None:
    capabilities.setup_process_credentials(proc.capabilities, user.uid, user.gid, user.groups)
    if proc.no_new_privs:
        calls.set_no_new_privs()


def _execve(path: str, args: tuple[str, ...], env: list[str]) -> NoReturn:
    envd = dict(kv.split("=", 1) for kv in env)
    try:
        os.execve(path, args, envd)
    except FileNotFoundError as e:
        raise _ExecFailed(127, f"exec {path!r}: {e.strerror}") from e
    except OSError as e:
        raise _ExecFailed(126, f"exec {path!r}: {e.strerror}") from e


# --------------------------------------------------------------------------- exec_into

def merge_exec_process(base: ProcessSpec, process: Any) -> ProcessSpec:
    """The container's process with what the exec operation gives (args; env, cwd, user, tty
    when given); capabilities, no_new_privs, rlimits and oom_score_adj stay the container's."""
    if not isinstance(process, dict):
        raise InvalidArgument("exec process: must be an object")
    args = process.get("args")
    if not (isinstance(args, list) and args and all(isinstance(a, str) for a in args)):
        raise InvalidArgument("exec process.args: must be a non-empty list of strings")
    env = process.get("env")
    if env is None:
        env = base.env
    elif not (isinstance(env, list) and all(isinstance(e, str) and "=" in e for e in env)):
        raise InvalidArgument("exec process.env: must be a list of KEY=VALUE strings")
    user = process.get("user")
    cwd = process.get("cwd") or base.cwd
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument(f"exec process.cwd: must be an absolute path, got {cwd!r}")
    return dataclasses.replace(
        base, args=tuple(args), env=tuple(env), cwd=cwd,
        user=UserSpec.from_json(user, "exec process.user") if user else base.user,
        tty=bool(process.get("tty", False)))


def _join_container_namespaces(pid: int, reporter: _Reporter, calls: Syscalls,
                               report: bool = True) -> None:
    """setns into every namespace of `pid` that differs from ours; the user namespace (a pod
    one) after those owned by the host's (pid, cgroup), the mount namespace (owned by the
    pod's user namespace then) last. report=False: born in pid's pid namespace already,
    with a host pid the shim knows (nothing to report, no fork)."""
    fds: dict[str, int] = {}
    order = ("ipc", "uts", "network", "cgroup", "pid", "user", "mount")
    try:
        for ns_type in order:
            name = _PROC_NS_NAMES[ns_type]
            try:
                theirs = os.stat(f"/proc/{pid}/ns/{name}")
            except FileNotFoundError as e:
                raise InvalidArgument(f"exec: container process {pid} is gone") from e
            ours = os.stat(f"/proc/self/ns/{name}")
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                fds[ns_type] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        for ns_type in order:
            if ns_type in fds:
                calls.setns(fds[ns_type], _NS_FLAGS[ns_type])
    finally:
        for fd in fds.values():
            os.close(fd)
    if report:
        _report_pid(reporter, enter_pid_ns="pid" in fds)
