"""The zygote's warm-up of the shim's request path, run before gc.freeze() and the forks.

CPython 3.11+ specialises bytecode in place the first times a code object runs (and the
first calls set type version tags, grow caches, allocate): done in every shim after the
fork, each of those writes copies a page of the zygote's memory into the shim. `warm_up`
runs what a shim runs when it serves containers (the control connection's line reading
and reply writing, the dispatch, parsing of every request with a representative
ContainerSpec, the handlers that answer from memory, snapshots, status-file JSON, the
init's report lines) often enough for the specialisation to settle, so the shims share it.

No side effects: a socketpair stands in for a client, the pod's directories are never
touched (its containers are records only: no process, no status file), and every fd opened
here is closed. Measured with bench/shim_memory.py.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Any

from runtime import container_spec
from runtime.pod_spec import PodSpec
from runtime.shim import protocol
from runtime.shim.control import Connection
from runtime.shim.loop import Loop
from runtime.shim.records import Container, ExecProcess, State
from runtime.shim.reports import Report, take_report_messages
from runtime.shim.server import Shim

ROUNDS = 32
_DIR = "/nonexistent/pycri-warm-up"
_NO_PID = 1 << 23  # above PID_MAX_LIMIT (1 << 22)  # never created: nothing here writes to the pod's dirs


def _spec(cid: str) -> dict[str, Any]:
    """A ContainerSpec's JSON like the daemon's (default mounts, capabilities, paths)."""
    return container_spec.ContainerSpec.from_json({
        "id": cid, "pod_id": "warm",
        "rootfs": {"lower": ["/l"], "upper": "/c/upper", "work": "/c/work", "readonly": False},
        "process": {"args": ["sleep", "60"], "env": ["PATH=/bin", "HOME=/root"], "cwd": "/",
                    "tty": False, "stdin": False, "stdin_once": False,
                    "user": {"uid": 0, "gid": 0, "username": None, "groupname": None,
                             "supplemental_groups": [], "policy": "Merge"},
                    "capabilities": container_spec.compute_capabilities().to_json(),
                    "no_new_privs": False, "oom_score_adj": None,
                    "rlimits": [r.to_json() for r in container_spec.default_rlimits()],
                    "apparmor_profile": None},
        "namespaces": [{"type": "mount", "path": None}, {"type": "network", "path": "/n/net"},
                       {"type": "ipc", "path": "/n/ipc"}, {"type": "uts", "path": "/n/uts"},
                       {"type": "pid", "path": None}],
        "hostname": None, "mounts": [m.to_json() for m in container_spec.default_mounts()],
        "devices": [], "masked_paths": container_spec.default_masked_paths(),
        "readonly_paths": container_spec.default_readonly_paths(), "privileged": False,
        "seccomp": None, "cgroup": None, "log_path": f"{_DIR}/{cid}.log"}).to_json()


def _requests() -> list[dict[str, Any] | bytes]:
    """Requests the warm pod answers from memory (or refuses) without any side effect."""
    reqs: list[dict[str, Any] | bytes] = [{"op": "hello"}, {"op": "state"}]
    for cid in ("run", "done"):
        reqs += [{"op": "state", "container_id": cid},
                 {"op": "kill", "container_id": cid, "signal": 15},
                 {"op": "start", "container_id": cid},          # FailedPrecondition
                 {"op": "reopen_log", "container_id": cid},
                 {"op": "create", "container_id": cid, "spec": _spec(cid)}]  # AlreadyExists
    reqs += [{"op": "wait", "container_id": "done", "timeout": 0.0},
             {"op": "exec", "container_id": "done", "process": {"args": ["true"]}},
             {"op": "exec_wait", "exec_id": "e", "timeout": 0.0},   # NotFound
             {"op": "exec_kill", "exec_id": "e", "signal": 9},      # NotFound
             {"op": "state", "container_id": "gone"}, {"op": "nope"}, b"[]\n", b"{\n"]
    return reqs


def _warm_pod(loop: Loop, listener: socket.socket) -> Shim:
    pod = PodSpec.from_json({"pod_id": "warm", "hostname": "warm",
                             "namespaces": {"network": "pod", "ipc": "pod", "pid": "pod"},
                             "shim_dir": _DIR, "ns_dir": _DIR})
    shim = Shim(pod, loop, None, {"net": "/n/net"}, listener)
    for cid, state in (("run", State.RUNNING), ("done", State.EXITED)):
        c = Container(cid, container_spec.ContainerSpec.from_json(_spec(cid)))
        c.state = state
        shim.state.containers[cid] = c
    return shim


def _lifecycle(shim: Shim, conn: Connection, theirs: socket.socket, n: int) -> None:
    """One container's create, start, exec and exit as the shim sees them, with pipes for
    the init's report and gate, and pids no process can have (above the kernel's
    PID_MAX_LIMIT: no signal reaches anything)."""
    pod = shim.state
    cid, pid, exec_pid = f"life{n}", _NO_PID + 2 * n, _NO_PID + 2 * n + 1
    c = Container(cid, container_spec.ContainerSpec.from_json(_spec(cid)))
    c.pid = c.init_pid = pid
    pod.containers[cid] = c
    pod.pids[pid] = ("container", c)
    c.report_fd = _report_pipe(b'{"pid": %d}\n{"ready": true, "user": {"uid": 0, "gid": 0, '
                               b'"additional_gids": []}}\n' % pid)
    c.pending_create = conn
    shim.containers.read_report(c)  # ready: the create reply; EOF: the init waits
    _drain(theirs)
    gate_r, c.gate_w = os.pipe2(os.O_CLOEXEC)
    try:
        c.report_fd = _report_pipe(b"")
        _request(conn, theirs, {"op": "start", "container_id": cid})
        shim.containers.read_report(c)  # EOF: the start reply
        _drain(theirs)
    finally:
        os.close(gate_r)
    e = ExecProcess(f"x{n}", c)
    e.forked_pid = e.pid = exec_pid
    e.report_fd = _report_pipe(b'{"pid": %d}\n' % exec_pid)
    e.pending_reply = conn
    pod.execs[e.id] = e
    pod.pids[exec_pid] = ("exec", e)
    shim.execs.read_report(e)  # EOF: the exec reply
    _drain(theirs)
    shim.reaper.child_exited(exec_pid, 0)
    _request(conn, theirs, {"op": "exec_wait", "exec_id": e.id, "timeout": 0.0})
    shim.reaper.child_exited(pid, 9)  # SIGKILL
    _request(conn, theirs, {"op": "wait", "container_id": cid, "timeout": 1.0})
    _request(conn, theirs, {"op": "delete", "container_id": cid})


def _report_pipe(data: bytes) -> int:
    """The read end of a pipe that holds `data`, then EOF."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w, data)
    finally:
        os.close(w)
    os.set_blocking(r, False)
    return r


def _request(conn: Connection, theirs: socket.socket, req: dict[str, Any] | bytes) -> None:
    theirs.send(req if isinstance(req, bytes) else json.dumps(req).encode() + b"\n")
    conn._on_readable()
    conn.pending = False  # wait and exec leave the request pending
    _drain(theirs)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(1 << 16):
            pass
    except BlockingIOError:
        pass


def warm_up(rounds: int = ROUNDS) -> None:
    protocol.warm_up(rounds)
    loop = Loop()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        shim = _warm_pod(loop, listener)
        ours.setblocking(False)
        theirs.setblocking(False)
        conn = Connection(loop, ours, shim.handle, lambda _: None)
        requests = _requests()
        done = shim.state.containers["done"]
        reports = (b'{"pid": 7}\n{"ready": true, "user": {"uid": 0, "gid": 0}}\n'
                   b'{"error": "x", "kind": "NotFound"}\nnot json\n')
        for n in range(rounds):
            for req in requests:
                _request(conn, theirs, req)
            _lifecycle(shim, conn, theirs, n)
            for c in shim.state.containers.values():
                c.waiters.clear()
                json.dumps(c.snapshot().to_json()).encode()  # what a status file holds
            msgs, _ = take_report_messages(reports)
            for msg in msgs:
                Report.from_json(msg)
            protocol.ContainerState.from_json(json.loads(json.dumps(done.snapshot().to_json())))
        conn.closed = True  # not close(): that would run the pod's detach on a fake pod
    finally:
        loop._sel.close()
        for s in (ours, theirs, listener):
            s.close()
