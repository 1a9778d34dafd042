"""The shim's control protocol (runtime.shim.protocol): every request and reply survives its
round trip, a malformed one is refused with InvalidArgument naming the field, the wire stays
what shims of the previous version send and expect (they outlive a daemon upgrade), and an
error reply rebuilds the pycri_common.errors class its kind names."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri_common import errors
from pycri_common.errors import InvalidArgument, PycriError
from runtime import syscalls
from runtime.container_spec import ContainerSpec
from runtime.shim import protocol as P
from runtime.shim.reports import Report
from runtime.shim_client import ShimClient, parse_state

SPEC = ContainerSpec.from_json({"id": "c1", "pod_id": "p1", "log_path": "/l/0.log",
                                "rootfs": {"lower": ["/l"], "upper": "/u/upper", "work": "/u/work"},
                                "process": {"args": ["sh"]}})
REQUESTS: list[P.Request] = [
    P.Hello(), P.Create("c1", SPEC),
    P.Start("c1"), P.Kill("c1", 15), P.Kill("c1"), P.State(), P.State("c1"), P.Wait("c1", 2.5),
    P.Wait("c1"), P.Delete("c1"), P.ReopenLog("c1"),
    P.Exec("c1", {"args": ["true"], "tty": False}), P.ExecWait("e1", 3.0), P.ExecWait("e1"),
    P.ExecKill("e1", 9), P.Attach("c1"), P.Shutdown(0.0), P.Shutdown(),
]

REPLIES: list[tuple[Any, P.Reply]] = [
    (P.Empty, P.Empty()),
    (P.HelloReply, P.HelloReply("p1", 42, 43, True, {"net": "/run/ns/net"}, ["c1"])),
    (P.HelloReply, P.HelloReply("p1", 42, None, False)),
    (P.CreateReply, P.CreateReply(7, {"uid": 0, "gid": 0, "groups": [0, 10]})),
    (P.StartReply, P.StartReply(1733140000123456789)),
    (P.ContainerState, P.ContainerState("exited", 7, 1, 2, 3, 137, "OOMKilled", "m")),
    (P.StateReply, P.StateReply({"a": P.ContainerState("running", 9), "b": P.ContainerState(
        "created")})),
    (P.DeleteReply, P.DeleteReply(True)),
    (P.ExecReply, P.ExecReply("e1", 99)),
    (P.ExecWaitReply, P.ExecWaitReply(137, True)),
]


@pytest.mark.parametrize("req", REQUESTS, ids=repr)
def test_request_round_trip(req: P.Request) -> None:
    line = json.dumps(req.to_json())
    assert P.parse_request(json.loads(line)) == req


@pytest.mark.parametrize(("cls", "reply"), REPLIES, ids=lambda x: repr(x)[:40])
def test_reply_round_trip(cls: Any, reply: P.Reply) -> None:
    assert cls.from_json(json.loads(json.dumps(reply.to_json()))) == reply


def test_every_op_has_one_request_class() -> None:
    assert sorted(P.REQUESTS) == sorted({type(r).op for r in REQUESTS})
    assert all(P.REQUESTS[op].op == op for op in P.REQUESTS)


# What the previous daemon (runtime.shim_client before the protocol module) wrote: a new
# daemon must write the same to a shim that survived the upgrade, and a new shim parse it.
OLD_DAEMON_LINES = [
    ({"op": "hello"}, P.Hello()),
    ({"op": "create", "container_id": "c1", "spec": SPEC.to_json()}, P.Create("c1", SPEC)),
    ({"op": "start", "container_id": "c1"}, P.Start("c1")),
    ({"op": "kill", "container_id": "c1", "signal": 15}, P.Kill("c1", 15)),
    ({"op": "state"}, P.State()),
    ({"op": "state", "container_id": "c1"}, P.State("c1")),
    ({"op": "wait", "container_id": "c1", "timeout": 10.0}, P.Wait("c1", 10.0)),
    ({"op": "delete", "container_id": "c1"}, P.Delete("c1")),
    ({"op": "reopen_log", "container_id": "c1"}, P.ReopenLog("c1")),
    ({"op": "exec", "container_id": "c1", "process": {"args": ["true"], "tty": False}},
     P.Exec("c1", {"args": ["true"], "tty": False})),
    ({"op": "exec", "container_id": "c1", "process": {"args": ["true"]}, "wait": True,
      "timeout": 5.0}, P.Exec("c1", {"args": ["true"]}, wait=True, timeout=5.0)),
    ({"op": "exec_wait", "exec_id": "e1", "timeout": 0.0}, P.ExecWait("e1", 0.0)),
    ({"op": "exec_kill", "exec_id": "e1", "signal": 9}, P.ExecKill("e1", 9)),
    ({"op": "attach", "container_id": "c1"}, P.Attach("c1")),
    ({"op": "shutdown", "grace": 10.0}, P.Shutdown(10.0)),
]


@pytest.mark.parametrize(("line", "req"), OLD_DAEMON_LINES, ids=lambda x: repr(x)[:40])
def test_the_wire_of_requests_is_unchanged(line: dict[str, Any], req: P.Request) -> None:
    assert req.to_json() == line
    assert P.parse_request(line) == req


def test_unknown_keys_are_ignored() -> None:
    assert P.parse_request({"op": "start", "container_id": "c", "from_the_future": 1}) == \
        P.Start("c")
    assert P.ExecReply.from_json({"exec_id": "e", "pid": 1, "new": True}) == P.ExecReply("e", 1)


BAD_REQUESTS = [
    ({}, "unknown op None"),
    ({"op": "frobnicate"}, "unknown op 'frobnicate'"),
    ({"op": 5}, "unknown op 5"),
    ({"op": "start"}, "container_id must be a non-empty name"),
    ({"op": "start", "container_id": "../x"}, "container_id must be a non-empty name"),
    ({"op": "start", "container_id": "a/b"}, "without '/'"),
    ({"op": "start", "container_id": "x" * 129}, "container_id"),
    ({"op": "start", "container_id": 7}, "container_id"),
    ({"op": "create", "container_id": "c"}, "ContainerSpec object in 'spec'"),
    ({"op": "create", "container_id": "c", "spec": "not a spec"}, "ContainerSpec"),
    ({"op": "create", "container_id": "c", "spec": {"id": "c"}}, "container spec"),
    ({"op": "kill", "container_id": "c", "signal": 0}, "signal must be an integer 1..64"),
    ({"op": "kill", "container_id": "c", "signal": 65}, "signal must be"),
    ({"op": "kill", "container_id": "c", "signal": "9"}, "signal must be"),
    ({"op": "wait", "container_id": "c", "timeout": -1}, "'timeout' must be a number of seconds"),
    ({"op": "wait", "container_id": "c", "timeout": "10"}, "'timeout' must be a number"),
    ({"op": "wait", "container_id": "c", "timeout": float("inf")}, "'timeout'"),
    ({"op": "wait", "container_id": "c", "timeout": True}, "'timeout'"),
    ({"op": "exec", "container_id": "c", "process": {"args": []}}, "process.args"),
    ({"op": "exec", "container_id": "c", "process": {"args": ["a", 1]}}, "process.args"),
    ({"op": "exec", "container_id": "c"}, "process.args"),
    ({"op": "exec_wait", "exec_id": "e", "timeout": -0.5}, "'timeout'"),
    ({"op": "exec_kill"}, "exec_id"),
    ({"op": "shutdown", "grace": -1}, "'grace' must be a number of seconds >= 0"),
    ({"op": "shutdown", "grace": "soon"}, "grace"),
    ({"op": "shutdown", "grace": float("nan")}, "grace"),
]


@pytest.mark.parametrize(("line", "message"), BAD_REQUESTS, ids=lambda x: repr(x)[:50])
def test_a_malformed_request_is_invalid_argument(line: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(".", r"\.")):
        P.parse_request(line)


@pytest.mark.parametrize(("cls", "obj", "field"), [
    (P.HelloReply, {"shim_pid": 1}, "pod_id"),
    (P.HelloReply, {"pod_id": "p", "shim_pid": "1"}, "shim_pid"),
    (P.HelloReply, {"pod_id": "p", "shim_pid": 1, "ns": {"net": 5}}, "ns"),
    (P.CreateReply, {"pid": 1.5}, "pid"),
    (P.StartReply, {}, "started_at"),
    (P.ContainerState, {"pid": 1}, "state"),
    (P.ContainerState, {"state": "exited", "exit_code": None, "reason": 3}, "reason"),
    (P.StateReply, {"containers": {"a": 1}}, "a"),
    (P.ExecReply, {"pid": 1}, "exec_id"),
    (P.ExecWaitReply, {"exit_code": True}, "exit_code"),
])
def test_a_malformed_reply_is_invalid_argument(cls: Any, obj: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument, match=repr(field)):
        cls.from_json(obj)


def test_errors_go_by_class_name() -> None:
    classes: list[type[PycriError]] = [errors.PycriError, *errors.PycriError.__subclasses__()]
    for cls in (c for c in classes if c.__module__ == errors.__name__):  # not cni's own
        wire = json.loads(json.dumps(P.error_to_json(cls("it failed"))))
        assert wire == {"ok": False, "kind": cls.__name__, "error": "it failed"}
        back = P.error_from_json(wire, "default")
        assert type(back) is cls and str(back) == "it failed"
    assert str(P.error_from_json({"ok": False, "kind": "NotFound"}, "op failed")) == "op failed"
    for kind in ("ShimError", "KeyError", "", None, 3, "from_kind"):
        assert type(P.error_from_json({"ok": False, "kind": kind, "error": "m"}, "d")) \
            is errors.PycriError


def test_container_state_frame_and_status_file() -> None:
    st = P.ContainerState("exited", 5, 1, 2, 3, 1, "Error", "")
    assert P.ContainerState.from_frame(st.to_frame()) == st
    for bad in (b"[]", b"{", b'{"state": 1}'):
        with pytest.raises(InvalidArgument):
            P.ContainerState.from_frame(bad)
    assert parse_state(st.to_json()) == st
    assert parse_state([1]) is None and parse_state({"state": None}) is None


def test_init_reports_parse_to_error_classes() -> None:
    got = Report.from_json({"error": "exec: no such file", "kind": "NotFound"})
    assert type(got.error) is errors.NotFound and str(got.error) == "exec: no such file"
    assert type(Report.from_json({"error": "x", "kind": "Weird"}).error) is errors.PycriError
    assert type(Report.from_json({"error": "x"}).error) is errors.PycriError
    assert Report.from_json({"pid": 12}) == Report(pid=12)
    assert Report.from_json({"pid": True}) == Report() == Report.from_json({"pid": -3})
    ready = Report.from_json({"ready": True, "user": {"uid": 1}})
    assert ready.ready and ready.user == {"uid": 1} and ready.error is None


# --- the daemon's client against a shim that answers with recorded lines ---------------------
class CannedShim:
    """Answers every request on <dir>/shim.sock with the next canned line."""

    def __init__(self, shim_dir: Path) -> None:
        self.lines: list[bytes] = []
        self.requests: list[dict[str, Any]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(shim_dir / "shim.sock"))
        self.listener.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                buf = b""
                while b"\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                self.requests.append(json.loads(buf.split(b"\n", 1)[0]))
                sock.sendall(self.lines.pop(0))

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def canned(tmp_path: Path) -> Iterator[tuple[CannedShim, ShimClient]]:
    shim = CannedShim(tmp_path)
    yield shim, ShimClient(str(tmp_path), timeout=5)
    shim.close()


@pytest.mark.parametrize(("kind", "cls"), [
    ("NotFound", errors.NotFound), ("InvalidArgument", errors.InvalidArgument),
    ("FailedPrecondition", errors.FailedPrecondition), ("AlreadyExists", errors.AlreadyExists),
    ("DeadlineExceeded", errors.DeadlineExceeded), ("Unavailable", errors.Unavailable),
    ("PycriError", errors.PycriError), ("ShimError", errors.PycriError),
])
def test_an_old_shims_error_reply_raises_its_class(canned: tuple[CannedShim, ShimClient],
                                                   kind: str, cls: type[PycriError]) -> None:
    shim, client = canned
    shim.lines.append(json.dumps({"ok": False, "kind": kind,
                                  "error": "container c1 not found in pod p"}).encode() + b"\n")
    with pytest.raises(PycriError, match="container c1 not found in pod p") as exc:
        client.start("c1")
    assert type(exc.value) is cls
    assert shim.requests == [{"op": "start", "container_id": "c1"}]


def test_old_shims_replies_parse(canned: tuple[CannedShim, ShimClient]) -> None:
    """Reply lines as the previous shim wrote them (json.dumps of its dicts)."""
    shim, client = canned
    state = {"state": "exited", "pid": 7, "created_at": 1, "started_at": 2, "finished_at": 3,
             "exit_code": 3, "reason": "Error", "message": ""}
    shim.lines += [json.dumps(line).encode() + b"\n" for line in (
        {"ok": True, "pod_id": "p", "shim_pid": 40, "pause_pid": None, "pause_alive": False,
         "ns": {}, "containers": ["c1"]},
        {"ok": True, "pid": 7, "user": {"uid": 0, "gid": 0, "groups": [0]}},
        {"ok": True, "containers": {"c1": state}},
        {"ok": True, **state},
        {"ok": True, "exec_id": "ab12", "pid": 9},
        {"ok": True, "exit_code": 0, "timed_out": False},
        {"ok": True, "deleted": False},
        {"ok": True},
    )]
    assert client.hello() == P.HelloReply("p", 40, None, False, {}, ["c1"])
    assert client.create("c1", SPEC).user == {"uid": 0, "gid": 0, "groups": [0]}
    assert client.state() == {"c1": P.ContainerState.from_json(state)}
    assert client.wait("c1", 1).exit_code == 3
    assert client.exec("c1", {"args": ["true"]}, []) == P.ExecReply("ab12", 9)
    assert client.exec_wait("ab12") == P.ExecWaitReply(0, False)
    assert client.delete("c1") is False
    client.kill("c1", 15)
    assert [r["op"] for r in shim.requests] == ["hello", "create", "state", "wait", "exec",
                                                "exec_wait", "delete", "kill"]


def test_a_malformed_reply_is_internal_not_the_callers_fault(
        canned: tuple[CannedShim, ShimClient]) -> None:
    shim, client = canned
    shim.lines.append(b'{"ok": true, "exec_id": 5, "pid": 9}\n')
    with pytest.raises(PycriError, match="answered 'exec' with a malformed reply") as exc:
        client.exec("c1", {"args": ["true"]}, [])
    assert type(exc.value) is errors.PycriError


# --- one reaping loop ------------------------------------------------------------------------
def test_reaped_children_yields_each_exit_once() -> None:
    """In a forked child (the test process's own children are not ours to reap)."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            kids = {}
            for exit_code in (3, 4):
                kid = os.fork()
                if kid == 0:
                    os._exit(exit_code)
                kids[kid] = exit_code
            got: dict[int, int] = {}
            deadline = time.monotonic() + 10
            while len(got) < len(kids) and time.monotonic() < deadline:
                got.update((p, os.waitstatus_to_exitcode(s)) for p, s in syscalls.reaped_children())
                time.sleep(0.01)
            code = 0 if got == kids and list(syscalls.reaped_children()) == [] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_zygotes_warm_up_runs_every_request() -> None:
    assert {line["op"] for line in P._SAMPLE_LINES} == set(P.REQUESTS)
    P.warm_up(rounds=1)
