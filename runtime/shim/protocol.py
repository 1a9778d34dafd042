"""The shim's control protocol (contract 3): one dataclass per request and per structured reply.

Both sides import this module: the shim (runtime.shim.server) parses each request line with
`parse_request`, the daemon (runtime.shim_client) builds requests and parses replies with
the reply classes' `from_json`. Validation is parsing: `from_json` raises InvalidArgument
naming the field, so a request a handler sees is well-formed. Unknown keys are ignored, in
both directions (a shim and a daemon of neighbouring versions talk to each other: shims
outlive a daemon upgrade).

Wire format: a request is {"op": <Request.op>, <fields>}; a reply {"ok": true, <fields>} or
{"ok": false, "kind": <class name in pycri_common.errors>, "error": message}
(`error_to_json` / `error_from_json`). The container spec of create and the process of exec
travel as opaque objects here (their schema is the init's contract, runtime.container_init).

Stdlib and pycri_common only: the shim imports little.
"""
from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from pycri_common import errors
from pycri_common.errors import InvalidArgument, PycriError

_T = TypeVar("_T")
_MISSING: Any = object()
MAX_ID = 128


# --- field readers -----------------------------------------------------------------------
def _get(obj: dict[str, Any], key: str, typ: type[_T] | tuple[type, ...], what: str,
         default: Any = _MISSING) -> _T:
    value = obj.get(key, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise InvalidArgument(f"{what} needs {key!r}")
        return default  # type: ignore[no-any-return]
    # bool is an int to Python, never to this protocol
    if not isinstance(value, typ) or (isinstance(value, bool) and bool not in _types(typ)):
        raise InvalidArgument(f"{what}: {key!r} must be {_type_names(typ)}, got {value!r}")
    return value  # type: ignore[return-value]


def _types(typ: type | tuple[type, ...]) -> tuple[type, ...]:
    return typ if isinstance(typ, tuple) else (typ,)


def _type_names(typ: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             dict: "an object", list: "a list"}
    return " or ".join(names.get(t, t.__name__) for t in _types(typ))


def _number(obj: dict[str, Any], key: str, what: str, default: float | None) -> float | None:
    """A finite number >= 0 (seconds); `default` when missing or null."""
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool) \
            or not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{what}: {key!r} must be a number of seconds >= 0, "
                              f"got {value!r}")
    return float(value)


def _int(obj: dict[str, Any], key: str, what: str, default: int = 0) -> int:
    return _get(obj, key, int, what, default)


def valid_id(value: Any, what: str) -> str:
    """A container or exec id: it names files (status files), so it is a plain name."""
    if not isinstance(value, str) or not value or "/" in value or value in (".", "..") \
            or len(value) > MAX_ID or "\0" in value:
        raise InvalidArgument(f"{what} must be a non-empty name without '/', got {value!r}")
    return value


def _id(obj: dict[str, Any], key: str) -> str:
    return valid_id(obj.get(key), key)


def _signal(obj: dict[str, Any]) -> int:
    sig = obj.get("signal", int(signal.SIGKILL))
    if not isinstance(sig, int) or not 1 <= sig <= 64:
        raise InvalidArgument(f"signal must be an integer 1..64, got {sig!r}")
    return sig


def _str_dict(obj: dict[str, Any], key: str, what: str) -> dict[str, str]:
    value: dict[str, Any] = _get(obj, key, dict, what, {})
    if not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{what}: {key!r} must map names to strings")
    return value


def _str_list(obj: dict[str, Any], key: str, what: str) -> list[str]:
    value: list[Any] = _get(obj, key, list, what, [])
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what}: {key!r} must be a list of strings")
    return value


def _shallow(obj: Any) -> dict[str, Any]:
    """The fields as a dict, not copied (dataclasses.asdict deep-copies a create's spec)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


# --- requests ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    op: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, **_shallow(self)}


@dataclass(frozen=True)
class Hello(Request):
    op: ClassVar[str] = "hello"

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Hello:
        return cls()


@dataclass(frozen=True)
class Create(Request):
    """Fork a container's init; `spec` is the ContainerSpec (runtime.container_init)."""

    op: ClassVar[str] = "create"
    container_id: str
    spec: dict[str, Any]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Create:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            raise InvalidArgument("create needs a ContainerSpec object in 'spec'")
        return cls(_id(obj, "container_id"), spec)


_C = TypeVar("_C", bound="_ContainerOp")


@dataclass(frozen=True)
class _ContainerOp(Request):
    container_id: str

    @classmethod
    def from_json(cls: type[_C], obj: dict[str, Any]) -> _C:
        return cls(_id(obj, "container_id"))


@dataclass(frozen=True)
class Start(_ContainerOp):
    op: ClassVar[str] = "start"


@dataclass(frozen=True)
class Delete(_ContainerOp):
    op: ClassVar[str] = "delete"


@dataclass(frozen=True)
class ReopenLog(_ContainerOp):
    op: ClassVar[str] = "reopen_log"


@dataclass(frozen=True)
class Attach(_ContainerOp):
    op: ClassVar[str] = "attach"


@dataclass(frozen=True)
class Kill(Request):
    op: ClassVar[str] = "kill"
    container_id: str
    signal: int = int(signal.SIGKILL)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Kill:
        return cls(_id(obj, "container_id"), _signal(obj))


@dataclass(frozen=True)
class State(Request):
    """One container's state, or (container_id None) every container's."""

    op: ClassVar[str] = "state"
    container_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op} if self.container_id is None else super().to_json()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> State:
        return cls(None if obj.get("container_id") is None else _id(obj, "container_id"))


@dataclass(frozen=True)
class Wait(Request):
    """Reply once the container exited, or with its current state after `timeout` seconds
    (None: no limit)."""

    op: ClassVar[str] = "wait"
    container_id: str
    timeout: float | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Wait:
        return cls(_id(obj, "container_id"), _number(obj, "timeout", "wait", None))


@dataclass(frozen=True)
class Exec(Request):
    """Start a process in the container on the fds passed with the request. `process` is the
    init's process object ({"args", "env"?, "cwd"?, "tty"?, "user"?}); args are checked here."""

    op: ClassVar[str] = "exec"
    container_id: str
    process: dict[str, Any]

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Exec:
        cid = _id(obj, "container_id")
        process = obj.get("process")
        if not isinstance(process, dict) or not isinstance(process.get("args"), list) \
                or not process["args"] or not all(isinstance(a, str) for a in process["args"]):
            raise InvalidArgument("exec needs process.args, a non-empty list of strings")
        return cls(cid, process)


@dataclass(frozen=True)
class ExecWait(Request):
    """Reply once the exec exited; timeout > 0 SIGKILLs it when it expires (0: no limit)."""

    op: ClassVar[str] = "exec_wait"
    exec_id: str
    timeout: float = 0.0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecWait:
        return cls(_id(obj, "exec_id"), _number(obj, "timeout", "exec_wait", 0.0) or 0.0)


@dataclass(frozen=True)
class ExecKill(Request):
    op: ClassVar[str] = "exec_kill"
    exec_id: str
    signal: int = int(signal.SIGKILL)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecKill:
        return cls(_id(obj, "exec_id"), _signal(obj))


@dataclass(frozen=True)
class Shutdown(Request):
    op: ClassVar[str] = "shutdown"
    grace: float = 10.0

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Shutdown:
        grace = obj.get("grace", 10.0)
        if not isinstance(grace, (int, float)) or isinstance(grace, bool) \
                or not math.isfinite(grace) or grace < 0:
            raise InvalidArgument(f"grace must be a number of seconds >= 0, got {grace!r}")
        return cls(float(grace))


AnyRequest = (Hello | Create | Start | Kill | State | Wait | Delete | ReopenLog | Exec | ExecWait
              | ExecKill | Attach | Shutdown)
REQUESTS: dict[str, Any] = {cls.op: cls for cls in (
    Hello, Create, Start, Kill, State, Wait, Delete, ReopenLog, Exec, ExecWait, ExecKill, Attach,
    Shutdown)}


def request_class(obj: dict[str, Any]) -> Any:
    """The request class of a parsed line; InvalidArgument for an unknown op."""
    op = obj.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise InvalidArgument(f"unknown op {op!r}")
    return cls


def parse_request(obj: dict[str, Any]) -> AnyRequest:
    """A request line (a JSON object) as its dataclass; InvalidArgument when malformed."""
    req: AnyRequest = request_class(obj).from_json(obj)
    return req


# --- replies -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    def to_json(self) -> dict[str, Any]:
        return _shallow(self)


@dataclass(frozen=True)
class Empty(Reply):
    """The reply of kill, reopen_log, exec_kill, attach and shutdown."""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Empty:
        return cls()


@dataclass(frozen=True)
class HelloReply(Reply):
    pod_id: str
    shim_pid: int
    pause_pid: int | None  # None: the pod has no namespaces of its own
    pause_alive: bool
    ns: dict[str, str] = field(default_factory=dict)  # "net"|"ipc"|"uts"|"pid" -> pinned path
    containers: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> HelloReply:
        w = "hello reply"
        pause_pid = obj.get("pause_pid")
        return cls(_get(obj, "pod_id", str, w), _int(obj, "shim_pid", w),
                   None if pause_pid is None else _int(obj, "pause_pid", w),
                   _get(obj, "pause_alive", bool, w, pause_pid is not None),
                   _str_dict(obj, "ns", w), _str_list(obj, "containers", w))


@dataclass(frozen=True)
class CreateReply(Reply):
    pid: int
    user: dict[str, Any] = field(default_factory=dict)  # what the init resolved: uid, gid, ...

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CreateReply:
        return cls(_int(obj, "pid", "create reply"), _get(obj, "user", dict, "create reply", {}))


@dataclass(frozen=True)
class StartReply(Reply):
    started_at: int  # ns since the epoch

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StartReply:
        return cls(_get(obj, "started_at", int, "start reply"))


@dataclass(frozen=True)
class ContainerState(Reply):
    """A container as the shim sees it: the reply of wait, an entry of state's reply, the
    payload of the attach exit frame and the content of a status file
    (runtime.shim.statusfile). `state` is "created", "running" or "exited"."""

    state: str
    pid: int = 0
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""     # exited: "Completed", "Error" or "OOMKilled"
    message: str = ""

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ContainerState:
        w = "container state"
        return cls(_get(obj, "state", str, w), _int(obj, "pid", w), _int(obj, "created_at", w),
                   _int(obj, "started_at", w), _int(obj, "finished_at", w),
                   _int(obj, "exit_code", w), _get(obj, "reason", str, w, ""),
                   _get(obj, "message", str, w, ""))

    @classmethod
    def from_frame(cls, payload: bytes) -> ContainerState:
        """The payload of the attach exit frame (runtime.shim.frames.EXITED)."""
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError) as e:
            raise InvalidArgument(f"exit frame: {e}") from None
        if not isinstance(obj, dict):
            raise InvalidArgument("exit frame: not a JSON object")
        return cls.from_json(obj)

    def to_frame(self) -> bytes:
        return json.dumps(self.to_json()).encode()


@dataclass(frozen=True)
class StateReply(Reply):
    containers: dict[str, ContainerState]

    def to_json(self) -> dict[str, Any]:
        return {"containers": {cid: s.to_json() for cid, s in self.containers.items()}}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StateReply:
        states: dict[str, Any] = _get(obj, "containers", dict, "state reply")
        return cls({cid: ContainerState.from_json(_get(states, cid, dict, "state reply"))
                    for cid in states})


@dataclass(frozen=True)
class DeleteReply(Reply):
    deleted: bool  # False: the shim did not know the container

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DeleteReply:
        return cls(_get(obj, "deleted", bool, "delete reply", False))


@dataclass(frozen=True)
class ExecReply(Reply):
    exec_id: str
    pid: int

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecReply:
        return cls(_get(obj, "exec_id", str, "exec reply"), _int(obj, "pid", "exec reply"))


@dataclass(frozen=True)
class ExecWaitReply(Reply):
    exit_code: int
    timed_out: bool = False

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecWaitReply:
        return cls(_get(obj, "exit_code", int, "exec_wait reply"),
                   _get(obj, "timed_out", bool, "exec_wait reply", False))


# --- errors ------------------------------------------------------------------------------
def error_to_json(err: PycriError) -> dict[str, Any]:
    """An error reply: the kind is the class name (the wire format of every shim version)."""
    return {"ok": False, "kind": err.kind, "error": str(err)}


def error_from_json(obj: dict[str, Any], default: str) -> PycriError:
    """The error of an error reply as its pycri_common.errors class (an unknown kind: the
    base class, INTERNAL); `default` is the message when the reply has none."""
    kind = obj.get("kind")
    message = obj.get("error")
    return errors.from_kind(kind if isinstance(kind, str) else "PycriError",
                            str(message) if message else default)
