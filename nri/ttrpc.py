"""ttrpc, containerd's lightweight RPC protocol, as sans-I/O state machines.

Wire format (containerd/ttrpc PROTOCOL.md): every message is a 10-byte big-endian header
(uint32 data length, uint32 stream id, uint8 message type, uint8 flags) and then the data.
Data is at most 4 MiB. Clients open streams with odd, strictly increasing ids; a unary call
is one Request frame (a ``ttrpc.Request`` protobuf naming service and method) answered by
one Response frame (a ``ttrpc.Response`` with a google.rpc.Status and the payload).

NRI uses unary calls only, so streaming (Data frames, the ``remote open`` flag) is refused
here with a status, as an upstream server does for a unary method. Nothing in this module
does I/O: bytes go in through ``receive_data`` and come out of ``data_to_send``, which is
what the fuzz tests drive byte by byte.

Peer misbehaviour never raises: a frame that is too long is skipped (its bytes are counted
and discarded, never buffered) and answered with RESOURCE_EXHAUSTED on its stream, a bad
stream id or an undecodable request gets INVALID_ARGUMENT on its stream, unknown message
types are ignored (for forward compatibility, as upstream does). Misuse by our own code
(answering twice, a message over the limit) raises ``ValueError``.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

from google.protobuf.message import DecodeError, Message

from proto import ttrpc_pb2

HEADER_LENGTH = 10
MAX_MESSAGE_LENGTH = 4 << 20
_HEADER = struct.Struct(">IIBB")
MAX_STREAM_ID = 0xFFFF_FFFF


class MessageType(IntEnum):
    REQUEST = 0x1
    RESPONSE = 0x2
    DATA = 0x3


FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4


class Code(IntEnum):
    """gRPC status codes, as carried in google.rpc.Status.code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


MAX_STATUS_MESSAGE = 4096


@dataclass(frozen=True)
class Status:
    code: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == Code.OK

    def to_proto(self) -> ttrpc_pb2.Status:
        return ttrpc_pb2.Status(code=self.code, message=self.message[:MAX_STATUS_MESSAGE])

    @staticmethod
    def from_proto(msg: ttrpc_pb2.Status) -> Status:
        return Status(msg.code, msg.message[:MAX_STATUS_MESSAGE])

    def __str__(self) -> str:
        try:
            name = Code(self.code).name
        except ValueError:
            name = f"code {self.code}"
        return f"{name}: {self.message}" if self.message else name


OK = Status(Code.OK)


class RpcError(Exception):
    """A call that ended with a non-OK status. ``fatal`` is set when the transport, not the
    peer's handler, failed it (connection lost, oversized or malformed answer, timeout): the
    connection is then not worth keeping."""

    def __init__(self, status: Status, *, fatal: bool = False) -> None:
        super().__init__(str(status))
        self.status = status
        self.fatal = fatal

    @property
    def code(self) -> int:
        return self.status.code


# ---------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes = b""


@dataclass(frozen=True)
class OversizedFrame:
    """A frame whose header announced more than the maximum; its data was discarded."""

    stream_id: int
    type: int
    flags: int
    length: int


def encode_frame(stream_id: int, type_: int, flags: int, data: bytes,
                 max_length: int = MAX_MESSAGE_LENGTH) -> bytes:
    if len(data) > max_length:
        raise ValueError(f"message of {len(data)} bytes exceeds the maximum of {max_length}")
    return _HEADER.pack(len(data), stream_id, type_, flags) + data


class FrameDecoder:
    """Splits a byte stream into frames. Holds at most one frame's worth of bytes beyond
    what one ``feed`` hands it; an oversized frame's data is counted off, not kept."""

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._max = max_length
        self._buf = bytearray()
        self._skip = 0  # bytes of an oversized frame still to discard
        self._skipped: OversizedFrame | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        out: list[Frame | OversizedFrame] = []
        self._buf += data
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return out
                assert self._skipped is not None
                out.append(self._skipped)
                self._skipped = None
            if len(self._buf) < HEADER_LENGTH:
                return out
            length, sid, type_, flags = _HEADER.unpack_from(self._buf)
            if length > self._max:
                del self._buf[:HEADER_LENGTH]
                self._skip = length
                self._skipped = OversizedFrame(sid, type_, flags, length)
                continue
            if len(self._buf) < HEADER_LENGTH + length:
                return out
            payload = bytes(self._buf[HEADER_LENGTH:HEADER_LENGTH + length])
            del self._buf[:HEADER_LENGTH + length]
            out.append(Frame(sid, type_, flags, payload))


# ---------------------------------------------------------------- server


@dataclass(frozen=True)
class RequestReceived:
    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_ns: int = 0
    metadata: tuple[tuple[str, str], ...] = ()


def _response_bytes(stream_id: int, status: Status, payload: bytes) -> bytes:
    body = ttrpc_pb2.Response(status=status.to_proto(), payload=payload).SerializeToString()
    return encode_frame(stream_id, MessageType.RESPONSE, 0, body)


class ServerConnection:
    """The serving end of one ttrpc connection (unary calls only)."""

    def __init__(self, *, max_active: int = 64, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._decoder = FrameDecoder(max_length)
        self._max_length = max_length
        self._max_active = max_active
        self._out: list[bytes] = []  # whole frames, in order
        self._active: set[int] = set()
        self._last_stream_id = 0
        self.errors_sent = 0  # status answers this layer made up itself

    @property
    def active(self) -> frozenset[int]:
        return frozenset(self._active)

    def data_to_send(self) -> bytes:
        return b"".join(self.frames_to_send())

    def frames_to_send(self) -> list[bytes]:
        """What to send, one complete frame per item (see nri.mux.encode_message)."""
        out, self._out = self._out, []
        return out

    def _refuse(self, stream_id: int, code: Code, message: str) -> None:
        self.errors_sent += 1
        self._out.append(_response_bytes(stream_id, Status(code, message), b""))

    def receive_data(self, data: bytes) -> list[RequestReceived]:
        out: list[RequestReceived] = []
        for frame in self._decoder.feed(data):
            if isinstance(frame, OversizedFrame):
                self._refuse(frame.stream_id, Code.RESOURCE_EXHAUSTED,
                             f"message length {frame.length} exceeds maximum message size "
                             f"of {self._max_length}")
                if frame.type == MessageType.REQUEST and frame.stream_id % 2 == 1:
                    self._last_stream_id = max(self._last_stream_id, frame.stream_id)
                continue
            req = self._frame(frame)
            if req is not None:
                out.append(req)
        return out

    def _frame(self, frame: Frame) -> RequestReceived | None:
        sid = frame.stream_id
        if sid % 2 != 1:
            self._refuse(sid, Code.INVALID_ARGUMENT,
                         "StreamID must be odd for client initiated streams")
            return None
        if frame.type == MessageType.DATA:
            if sid not in self._active:
                self._refuse(sid, Code.INVALID_ARGUMENT, "StreamID is no longer active")
            else:
                self._active.discard(sid)
                self._refuse(sid, Code.INVALID_ARGUMENT, "data frame on a unary stream")
            return None
        if frame.type != MessageType.REQUEST:
            return None  # responses and unknown types: ignored, as upstream does
        if sid <= self._last_stream_id:
            self._refuse(sid, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
            return None
        self._last_stream_id = sid
        if frame.flags & FLAG_REMOTE_OPEN:
            self._refuse(sid, Code.UNIMPLEMENTED, "streaming requests are not supported")
            return None
        req = ttrpc_pb2.Request()
        try:
            req.ParseFromString(frame.data)
        except DecodeError as e:
            self._refuse(sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {e}")
            return None
        if len(self._active) >= self._max_active:
            self._refuse(sid, Code.RESOURCE_EXHAUSTED,
                         f"more than {self._max_active} requests in flight")
            return None
        self._active.add(sid)
        return RequestReceived(sid, req.service, req.method, req.payload, req.timeout_nano,
                               tuple((kv.key, kv.value) for kv in req.metadata))

    def send_response(self, stream_id: int, payload: bytes = b"", status: Status = OK) -> bool:
        """Answers a request. False (and nothing sent) when the stream was closed meanwhile
        (the peer broke it); an answer over the size limit goes out as RESOURCE_EXHAUSTED."""
        if stream_id not in self._active:
            return False
        self._active.discard(stream_id)
        body = ttrpc_pb2.Response(status=status.to_proto(), payload=payload).SerializeToString()
        if len(body) > self._max_length:
            self._refuse(stream_id, Code.RESOURCE_EXHAUSTED,
                         f"response of {len(body)} bytes exceeds maximum message size "
                         f"of {self._max_length}")
            return True
        self._out.append(encode_frame(stream_id, MessageType.RESPONSE, 0, body, self._max_length))
        return True


# ---------------------------------------------------------------- client


@dataclass(frozen=True)
class ResponseReceived:
    stream_id: int
    status: Status
    payload: bytes = b""
    fatal: bool = False  # failed by the transport, not by the peer's handler

    def error(self) -> RpcError | None:
        return None if self.status.ok else RpcError(self.status, fatal=self.fatal)


class ClientConnection:
    """The calling end of one ttrpc connection (unary calls only)."""

    def __init__(self, *, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._decoder = FrameDecoder(max_length)
        self._max_length = max_length
        self._out: list[bytes] = []  # whole frames, in order
        self._pending: set[int] = set()
        self._next_id = 1
        self.ignored = 0  # frames for no pending stream, of unknown type, or server-initiated

    @property
    def pending(self) -> frozenset[int]:
        return frozenset(self._pending)

    def data_to_send(self) -> bytes:
        return b"".join(self.frames_to_send())

    def frames_to_send(self) -> list[bytes]:
        """What to send, one complete frame per item (see nri.mux.encode_message)."""
        out, self._out = self._out, []
        return out

    def send_request(self, service: str, method: str, payload: bytes, *, timeout_ns: int = 0,
                     metadata: Iterable[tuple[str, str]] = ()) -> int:
        body = ttrpc_pb2.Request(
            service=service, method=method, payload=payload, timeout_nano=timeout_ns,
            metadata=[ttrpc_pb2.KeyValue(key=k, value=v) for k, v in metadata],
        ).SerializeToString()
        if len(body) > self._max_length:
            raise ValueError(f"request of {len(body)} bytes exceeds the maximum of "
                             f"{self._max_length}")
        if self._next_id > MAX_STREAM_ID:
            raise ValueError("stream ids exhausted: open a new connection")
        sid = self._next_id
        self._next_id += 2
        self._pending.add(sid)
        self._out.append(encode_frame(sid, MessageType.REQUEST, 0, body, self._max_length))
        return sid

    def cancel(self, stream_id: int) -> None:
        """Forgets a call (e.g. timed out): its answer, if one comes, is ignored."""
        self._pending.discard(stream_id)

    def connection_lost(self, message: str = "connection closed") -> list[ResponseReceived]:
        failed = [ResponseReceived(sid, Status(Code.UNAVAILABLE, message), fatal=True)
                  for sid in sorted(self._pending)]
        self._pending.clear()
        return failed

    def receive_data(self, data: bytes) -> list[ResponseReceived]:
        out: list[ResponseReceived] = []
        for frame in self._decoder.feed(data):
            got = self._frame(frame)
            if got is None:
                self.ignored += 1
            else:
                out.append(got)
        return out

    def _frame(self, frame: Frame | OversizedFrame) -> ResponseReceived | None:
        sid = frame.stream_id
        if sid not in self._pending:
            return None
        if isinstance(frame, OversizedFrame):
            self._pending.discard(sid)
            return ResponseReceived(sid, Status(
                Code.RESOURCE_EXHAUSTED, f"response length {frame.length} exceeds maximum "
                f"message size of {self._max_length}"), fatal=True)
        if frame.type == MessageType.DATA:
            self._pending.discard(sid)
            return ResponseReceived(sid, Status(Code.INTERNAL, "unexpected data message on a "
                                                "unary stream"), fatal=True)
        if frame.type != MessageType.RESPONSE:
            return None
        self._pending.discard(sid)
        resp = ttrpc_pb2.Response()
        try:
            resp.ParseFromString(frame.data)
        except DecodeError as e:
            return ResponseReceived(sid, Status(Code.INTERNAL, f"malformed response: {e}"),
                                    fatal=True)
        status = Status.from_proto(resp.status) if resp.HasField("status") else OK
        return ResponseReceived(sid, status, resp.payload)


# ---------------------------------------------------------------- routing

M = TypeVar("M", bound=Message)


@dataclass
class _Method(Generic[M]):
    request_type: type[M]
    handler: Callable[[M], Message]


@dataclass
class Router:
    """Maps (service, method) to typed handlers. A handler returns the response message or
    raises RpcError; anything else it raises becomes UNKNOWN (its text, never a traceback)."""

    methods: dict[tuple[str, str], _Method[Any]] = field(default_factory=dict)

    def add(self, service: str, method: str, request_type: type[M],
            handler: Callable[[M], Message]) -> None:
        self.methods[(service, method)] = _Method(request_type, handler)

    def dispatch(self, req: RequestReceived) -> tuple[bytes, Status]:
        entry = self.methods.get((req.service, req.method))
        if entry is None:
            if not any(s == req.service for s, _ in self.methods):
                return b"", Status(Code.UNIMPLEMENTED, f"service {req.service[:200]}")
            return b"", Status(Code.UNIMPLEMENTED, f"method {req.method[:200]}")
        msg = entry.request_type()
        try:
            msg.ParseFromString(req.payload)
        except DecodeError as e:
            return b"", Status(Code.INVALID_ARGUMENT, f"unmarshal {req.method}: {e}")
        try:
            answer = entry.handler(msg)
        except RpcError as e:
            return b"", e.status
        except Exception as e:  # noqa: BLE001 - a handler's failure is the caller's status
            return b"", Status(Code.UNKNOWN, f"{type(e).__name__}: {e}")
        return answer.SerializeToString(), OK
