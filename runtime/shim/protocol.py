"""The shim's control protocol (contract 3): one dataclass per request and per structured reply.

Both sides import this module: the shim (runtime.shim.server) parses each request line with
`parse_request`, the daemon (runtime.shim_client) builds requests and parses replies with
the reply classes' `from_json`. Validation is parsing: `from_json` raises InvalidArgument
naming the field, so a request a handler sees is well-formed. Unknown keys are ignored, in
both directions (a shim and a daemon of neighbouring versions talk to each other: shims
outlive a daemon upgrade).

Wire format: a request is {"op": <Request.op>, <fields>}; a reply {"ok": true, <fields>} or
{"ok": false, "kind": <class name in pycri_common.errors>, "error": message}
(`error_to_json` / `error_from_json`). The container spec of create is parsed by its own
class (runtime.container_spec.ContainerSpec, contract 4); the process of exec travels as an
object whose args are checked here (the rest is the init's, runtime.container_init).

Stdlib, pycri_common and runtime.container_spec only: the shim imports little.
"""
from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from pycri_common import errors
from pycri_common.errors import InvalidArgument, PycriError
from runtime.container_spec import ContainerSpec

_MISSING: Any = object()
MAX_ID = 128


# --- field readers: (obj, key, what) -> value, InvalidArgument naming the field ------------
Reader = Callable[[dict[str, Any], str, str], Any]


def _typed(typ: type | tuple[type, ...], default: Any = _MISSING) -> Reader:
    """A value of `typ` (bool is an int to Python, never to this protocol); `default` when
    the key is missing or null (without one the key is required)."""
    types = typ if isinstance(typ, tuple) else (typ,)

    def read(obj: dict[str, Any], key: str, what: str) -> Any:
        value = obj.get(key)
        if value is None:
            if default is _MISSING:
                raise InvalidArgument(f"{what} needs {key!r}")
            return default() if callable(default) else default
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise InvalidArgument(f"{what}: {key!r} must be {_type_names(types)}, "
                                  f"got {value!r}")
        return value
    return read


def _type_names(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             dict: "an object", list: "a list"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _seconds(default: float | None) -> Reader:
    """A finite number of seconds >= 0; `default` when missing or null."""
    def read(obj: dict[str, Any], key: str, what: str) -> float | None:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"{what}: {key!r} must be a number of seconds >= 0, "
                                  f"got {value!r}")
        return float(value)
    return read


def valid_id(value: Any, what: str) -> str:
    """A container or exec id: it names files (status files), so it is a plain name."""
    if not isinstance(value, str) or not value or "/" in value or value in (".", "..") \
            or len(value) > MAX_ID or "\0" in value:
        raise InvalidArgument(f"{what} must be a non-empty name without '/', got {value!r}")
    return value


def _id(obj: dict[str, Any], key: str, what: str) -> str:
    return valid_id(obj.get(key), key)


def _optional_id(obj: dict[str, Any], key: str, what: str) -> str | None:
    return None if obj.get(key) is None else valid_id(obj[key], key)


def _signal(obj: dict[str, Any], key: str, what: str) -> int:
    sig = obj.get(key, int(signal.SIGKILL))
    if not isinstance(sig, int) or not 1 <= sig <= 64:
        raise InvalidArgument(f"signal must be an integer 1..64, got {sig!r}")
    return sig


def _spec(obj: dict[str, Any], key: str, what: str) -> ContainerSpec:
    spec = obj.get(key)
    if not isinstance(spec, dict):
        raise InvalidArgument("create needs a ContainerSpec object in 'spec'")
    return ContainerSpec.from_json(spec)


def _process(obj: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    process = obj.get(key)
    if not isinstance(process, dict) or not isinstance(process.get("args"), list) \
            or not process["args"] or not all(isinstance(a, str) for a in process["args"]):
        raise InvalidArgument("exec needs process.args, a non-empty list of strings")
    return process


def _str_map(obj: dict[str, Any], key: str, what: str) -> dict[str, str]:
    value: dict[str, Any] = _typed(dict, dict)(obj, key, what)
    if not all(isinstance(v, str) for v in value.values()):
        raise InvalidArgument(f"{what}: {key!r} must map names to strings")
    return value


def _str_list(obj: dict[str, Any], key: str, what: str) -> list[str]:
    value: list[Any] = _typed(list, list)(obj, key, what)
    if not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{what}: {key!r} must be a list of strings")
    return value


def _wire(read: Reader, default: Any = _MISSING) -> Any:
    """A dataclass field read from the wire by `read`; `default` for building one in code."""
    if default is _MISSING:
        return field(metadata={"read": read})
    if isinstance(default, (dict, list)):
        return field(default_factory=type(default), metadata={"read": read})
    return field(default=default, metadata={"read": read})


_M = TypeVar("_M", bound="Message")


@dataclass(frozen=True)
class Message:
    """A request or a reply: its fields say how they are read (`_wire`).

    The (name, reader) pairs are worked out once, at import (`_prepare`): the shims fork
    from the zygote that imported this, and every object a request touches after the fork
    costs its page in each shim (copy-on-write); dataclasses.fields() per call touched many.
    """

    _readers: ClassVar[tuple[tuple[str, Reader], ...]] = ()
    _names: ClassVar[tuple[str, ...]] = ()
    _what: ClassVar[str] = ""

    @classmethod
    def from_json(cls: type[_M], obj: dict[str, Any]) -> _M:
        what = cls._what
        return cls(**{name: read(obj, name, what) for name, read in cls._readers})

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict, not copied (dataclasses.asdict deep-copies a create's spec)."""
        return {name: getattr(self, name) for name in self._names}


def _prepare(cls: type[Message]) -> None:
    for sub in cls.__subclasses__():
        sub._readers = tuple((f.name, f.metadata["read"]) for f in fields(sub))
        sub._names = tuple(name for name, _ in sub._readers)
        sub._what = getattr(sub, "op", "") or sub.__name__
        _prepare(sub)


_SIGNAL = int(signal.SIGKILL)


# --- requests ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Request(Message):
    op: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, **super().to_json()}


@dataclass(frozen=True)
class Hello(Request):
    op: ClassVar[str] = "hello"


@dataclass(frozen=True)
class ContainerRequest(Request):
    """An operation on one container of the pod."""

    container_id: str = _wire(_id)


# Subclasses that add no field need no @dataclass of their own (frozen, eq and repr are
# inherited; eq compares the class too).
class Start(ContainerRequest):
    """Open the init's gate; the reply comes once the exec succeeded."""

    op: ClassVar[str] = "start"


class Delete(ContainerRequest):
    """SIGKILL (if running) and forget the container; an unknown one is not an error."""

    op: ClassVar[str] = "delete"


class ReopenLog(ContainerRequest):
    op: ClassVar[str] = "reopen_log"


class Attach(ContainerRequest):
    """The ok reply, then frames both ways (runtime.shim.frames)."""

    op: ClassVar[str] = "attach"


@dataclass(frozen=True)
class Create(ContainerRequest):
    """Fork a container's init on the ContainerSpec (contract 4, runtime.container_spec)."""

    op: ClassVar[str] = "create"
    spec: ContainerSpec = _wire(_spec)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "container_id": self.container_id, "spec": self.spec.to_json()}


@dataclass(frozen=True)
class Kill(ContainerRequest):
    op: ClassVar[str] = "kill"
    signal: int = _wire(_signal, _SIGNAL)


@dataclass(frozen=True)
class State(Request):
    """One container's state, or (container_id None) every container's."""

    op: ClassVar[str] = "state"
    container_id: str | None = _wire(_optional_id, None)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op} if self.container_id is None else super().to_json()


@dataclass(frozen=True)
class Wait(ContainerRequest):
    """Reply once the container exited, or with its current state after `timeout` seconds
    (None: no limit)."""

    op: ClassVar[str] = "wait"
    timeout: float | None = _wire(_seconds(None), None)


@dataclass(frozen=True)
class Exec(ContainerRequest):
    """Start a process in the container on the fds passed with the request. `process` is the
    init's process object ({"args", "env"?, "cwd"?, "tty"?, "user"?}); args are checked here.
    wait: the reply is the exec's ExecWaitReply once it exited, as an exec_wait with `timeout`
    would give (ExecSync: one connection, no second request); an older shim ignores the field
    and replies ExecReply at once."""

    op: ClassVar[str] = "exec"
    process: dict[str, Any] = _wire(_process)
    wait: bool = _wire(_typed(bool, False), False)
    timeout: float = _wire(_seconds(0.0), 0.0)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if not self.wait:   # the line an exec always was
            del out["wait"], out["timeout"]
        return out


@dataclass(frozen=True)
class ExecWait(Request):
    """Reply once the exec exited; timeout > 0 SIGKILLs it when it expires (0: no limit)."""

    op: ClassVar[str] = "exec_wait"
    exec_id: str = _wire(_id)
    timeout: float = _wire(_seconds(0.0), 0.0)


@dataclass(frozen=True)
class ExecKill(Request):
    op: ClassVar[str] = "exec_kill"
    exec_id: str = _wire(_id)
    signal: int = _wire(_signal, _SIGNAL)


@dataclass(frozen=True)
class Shutdown(Request):
    """Stop everything, SIGKILL after `grace` seconds; the shim exits."""

    op: ClassVar[str] = "shutdown"
    grace: float = _wire(_seconds(10.0), 10.0)


AnyRequest = (Hello | Create | Start | Kill | State | Wait | Delete | ReopenLog | Exec | ExecWait
              | ExecKill | Attach | Shutdown)
REQUESTS: dict[str, type[AnyRequest]] = {cls.op: cls for cls in (
    Hello, Create, Start, Kill, State, Wait, Delete, ReopenLog, Exec, ExecWait, ExecKill, Attach,
    Shutdown)}


def request_class(obj: dict[str, Any]) -> type[AnyRequest]:
    """The request class of a parsed line; InvalidArgument for an unknown op."""
    op = obj.get("op")
    cls = REQUESTS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise InvalidArgument(f"unknown op {op!r}")
    return cls


def parse_request(obj: dict[str, Any]) -> AnyRequest:
    """A request line (a JSON object) as its dataclass; InvalidArgument when malformed."""
    return request_class(obj).from_json(obj)


# --- replies -----------------------------------------------------------------------------
def _int() -> Any:
    return _wire(_typed(int, 0), 0)


def _str() -> Any:
    return _wire(_typed(str, ""), "")


@dataclass(frozen=True)
class Reply(Message):
    pass


@dataclass(frozen=True)
class Empty(Reply):
    """The reply of kill, reopen_log, exec_kill, attach and shutdown."""


def _pause_alive(obj: dict[str, Any], key: str, what: str) -> bool:
    return bool(_typed(bool, obj.get("pause_pid") is not None)(obj, key, what))


@dataclass(frozen=True)
class HelloReply(Reply):
    pod_id: str = _wire(_typed(str))
    shim_pid: int = _wire(_typed(int))
    pause_pid: int | None = _wire(_typed(int, None))  # None: no namespaces of its own
    pause_alive: bool = _wire(_pause_alive)
    ns: dict[str, str] = _wire(_str_map, {})  # "net"|"ipc"|"uts"|"pid" -> pinned path
    containers: list[str] = _wire(_str_list, [])


@dataclass(frozen=True)
class CreateReply(Reply):
    pid: int = _wire(_typed(int))
    user: dict[str, Any] = _wire(_typed(dict, dict), {})  # what the init resolved: uid, gid...


@dataclass(frozen=True)
class StartReply(Reply):
    started_at: int = _wire(_typed(int))  # ns since the epoch


@dataclass(frozen=True)
class ContainerState(Reply):
    """A container as the shim sees it: the reply of wait, an entry of state's reply, the
    payload of the attach exit frame and the content of a status file
    (runtime.shim.statusfile). `state` is "created", "running" or "exited"."""

    state: str = _wire(_typed(str))
    pid: int = _int()
    created_at: int = _int()
    started_at: int = _int()
    finished_at: int = _int()
    exit_code: int = _int()
    reason: str = _str()     # exited: "Completed", "Error" or "OOMKilled"
    message: str = _str()

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


def _states(obj: dict[str, Any], key: str, what: str) -> dict[str, ContainerState]:
    states: dict[str, Any] = _typed(dict)(obj, key, what)
    return {cid: ContainerState.from_json(_typed(dict)(states, cid, what)) for cid in states}


@dataclass(frozen=True)
class StateReply(Reply):
    containers: dict[str, ContainerState] = _wire(_states)

    def to_json(self) -> dict[str, Any]:
        return {"containers": {cid: s.to_json() for cid, s in self.containers.items()}}


@dataclass(frozen=True)
class DeleteReply(Reply):
    deleted: bool = _wire(_typed(bool, False))  # False: the shim did not know the container


@dataclass(frozen=True)
class ExecReply(Reply):
    exec_id: str = _wire(_typed(str))
    pid: int = _wire(_typed(int))


@dataclass(frozen=True)
class ExecWaitReply(Reply):
    exit_code: int = _wire(_typed(int))
    timed_out: bool = _wire(_typed(bool, False), False)


_prepare(Message)

#: one well-formed line of every request, for warm_up()
_SAMPLE_LINES: tuple[dict[str, Any], ...] = (
    {"op": "hello"}, {"op": "start", "container_id": "c"}, {"op": "delete", "container_id": "c"},
    {"op": "reopen_log", "container_id": "c"}, {"op": "attach", "container_id": "c"},
    {"op": "kill", "container_id": "c", "signal": 15}, {"op": "state"},
    {"op": "state", "container_id": "c"}, {"op": "wait", "container_id": "c", "timeout": 1.0},
    {"op": "exec", "container_id": "c", "process": {"args": ["true"]}},
    {"op": "exec", "container_id": "c", "process": {"args": ["true"]}, "wait": True,
     "timeout": 1.0},
    {"op": "exec_wait", "exec_id": "e", "timeout": 0.0}, {"op": "exec_kill", "exec_id": "e"},
    {"op": "shutdown", "grace": 1.0},
    {"op": "create", "container_id": "c", "spec": {
        "id": "c", "pod_id": "p", "process": {"args": ["true"]},
        "rootfs": {"lower": ["/l"], "upper": "/c/upper", "work": "/c/work"}}},
)


def warm_up(rounds: int = 16) -> None:
    """Run the parse and serialisation code once per kind, `rounds` times, in the zygote
    before it forks shims. CPython (3.11+) specialises bytecode in place the first times a
    code object runs: done in every shim, that writes to (and copies) the pages of each code
    object the protocol runs, about 40 KiB per message class; done here, the shims share
    the specialised code."""
    state = ContainerState("running", 1)
    replies: tuple[Reply, ...] = (
        Empty(), HelloReply("p", 1, None, False), CreateReply(1), StartReply(1), state,
        StateReply({"c": state}), DeleteReply(True), ExecReply("e", 1), ExecWaitReply(0))
    for _ in range(rounds):
        for line in _SAMPLE_LINES:
            parse_request(line).to_json()
        for reply in replies:
            type(reply).from_json(json.loads(json.dumps(reply.to_json())))
        ContainerState.from_frame(state.to_frame())
        error_from_json(error_to_json(InvalidArgument("x")), "")


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
