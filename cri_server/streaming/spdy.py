"""SPDY/3.1 framing as a pure state machine: bytes in, events out, frames queued to send.

No I/O here (the design of python-hyper/h2): feed received bytes to
`SpdyConnection.receive_data()`, act on the returned events, call the send methods, and
write `data_to_send()` to the socket. `cri_server.streaming.spdy_session` wraps it with
sockets and threads.

What it implements (draft-mbelshe-httpbis-spdy-00 / SPDY/3.1):
- frames SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS,
  WINDOW_UPDATE and DATA (CREDENTIAL and unknown control frames are ignored);
- header blocks compressed with one zlib context per direction, primed with the SPDY/3
  dictionary, each block ended with a sync flush; header names are lower case on the
  wire and looked up case-insensitively;
- stream ids: the client opens odd ids, the server even ids, always increasing;
  PING ids follow the same parity and a peer's PING is answered automatically;
- FIN on SYN_STREAM/SYN_REPLY/HEADERS/DATA half-closes a direction; a stream is
  forgotten once both directions are closed (or it was reset);
- flow control per stream and per session, both starting at 64 KiB: received DATA is
  counted against our windows and given back with WINDOW_UPDATE once the application
  acknowledges it (`acknowledge_received_data`) and half a window has been consumed;
  outgoing DATA waits in a per-stream buffer until the peer's windows allow it.

Peers that ignore flow control: Go's spdystream (kubectl, crictl, kubelet) never sends
WINDOW_UPDATE nor SETTINGS and does not count windows. With `flow_control="auto"` (the
server's choice) windows are honoured once the peer shows it does flow control (a
WINDOW_UPDATE or an INITIAL_WINDOW_SIZE setting); before that the I/O layer may call
`assume_peer_ignores_flow_control()` when it is blocked on a window, after which
DATA is sent unthrottled, and a peer overrunning our receive windows is tolerated.
`flow_control="strict"` enforces the specification both ways from the start.
"""
from __future__ import annotations

import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal

from cri_server.streaming.spdy_dictionary import SPDY3_DICTIONARY

SPDY_VERSION = 3
DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 0x7FFFFFFF
MAX_DATA_FRAME = 16 * 1024          # the size we cut outgoing DATA frames into
MAX_FRAME_LENGTH = 0xFFFFFF         # 24-bit length field
MAX_HEADER_BLOCK = 256 * 1024       # decompressed header block limit (zlib bomb guard)
MAX_HEADER_ENTRIES = 1024           # name/value pairs a block may hold (NUL-split values counted)
MAX_PEER_STREAMS = 1000             # open streams a peer may have; more are REFUSED_STREAM

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR = 0x01

Headers = list[tuple[str, str]]
FlowControlMode = Literal["strict", "auto"]


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9
    CREDENTIAL = 10


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 11


class Setting(IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class SpdyProtocolError(Exception):
    """The peer broke the protocol; a GOAWAY has been queued and the session is over."""

    def __init__(self, message: str, status: GoAwayStatus = GoAwayStatus.PROTOCOL_ERROR):
        super().__init__(message)
        self.status = status


class SpdyStreamError(Exception):
    """A local call is not valid for the stream's state (unknown, closed or reset)."""


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class StreamOpened:
    stream_id: int
    headers: Headers
    associated_stream_id: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class ReplyReceived:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class HeadersReceived:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class DataReceived:
    """DATA payload; acknowledge `len(data)` once consumed so the window reopens."""

    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True)
class StreamEnded:
    """The peer half-closed the stream (FIN): no more data will come on it."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    stream_id: int
    status: int
    remote: bool = True


@dataclass(frozen=True)
class SettingsReceived:
    settings: dict[int, int]


@dataclass(frozen=True)
class PingReceived:
    """A peer's PING (already answered)."""

    ping_id: int


@dataclass(frozen=True)
class PingAcknowledged:
    """The peer echoed one of our PINGs."""

    ping_id: int


@dataclass(frozen=True)
class GoAwayReceived:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class WindowUpdated:
    """Our send window grew (stream_id 0 = the session window)."""

    stream_id: int
    delta: int


Event = (StreamOpened | ReplyReceived | HeadersReceived | DataReceived | StreamEnded
         | StreamReset | SettingsReceived | PingReceived | PingAcknowledged
         | GoAwayReceived | WindowUpdated)


# ---------------------------------------------------------------- header blocks


def encode_header_block(headers: Headers) -> bytes:
    """Uncompressed SPDY/3 name/value block (32-bit counts and lengths, names lower case)."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers:
        n = name.lower().encode("utf-8")
        v = value.encode("utf-8")
        if not n:
            raise ValueError("SPDY header names must not be empty")
        out.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
    return b"".join(out)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block; raises ValueError when malformed or when it
    holds more than MAX_HEADER_ENTRIES pairs (each costs far more memory than its bytes)."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(block):
            raise ValueError("truncated header block")
        chunk = block[pos:pos + n]
        pos += n
        return chunk

    (count,) = struct.unpack(">I", take(4))
    if count > MAX_HEADER_ENTRIES:
        raise ValueError(f"header block claims {count} entries (at most {MAX_HEADER_ENTRIES})")
    headers: Headers = []
    for _ in range(count):
        (nlen,) = struct.unpack(">I", take(4))
        if nlen == 0:
            raise ValueError("empty header name")
        name = take(nlen).decode("utf-8", "replace").lower()
        (vlen,) = struct.unpack(">I", take(4))
        raw_value = take(vlen)
        # One name may carry several NUL-separated values.
        if len(headers) + raw_value.count(b"\x00") >= MAX_HEADER_ENTRIES:
            raise ValueError(f"header block holds more than {MAX_HEADER_ENTRIES} values")
        for part in raw_value.decode("utf-8", "replace").split("\x00"):
            headers.append((name, part))
    if pos != len(block):
        raise ValueError("trailing bytes after header block")
    return headers


def header_value(headers: Headers, name: str, default: str = "") -> str:
    """First value of a header, name compared case-insensitively."""
    wanted = name.lower()
    for n, v in headers:
        if n == wanted:
            return v
    return default


class _HeaderCompressor:
    def __init__(self) -> None:
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15,
                                   zdict=SPDY3_DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        raw = encode_header_block(headers)
        return self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)


class _HeaderDecompressor:
    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, zdict=SPDY3_DICTIONARY)

    def decompress(self, data: bytes) -> Headers:
        try:
            raw = self._z.decompress(data, MAX_HEADER_BLOCK + 1)
        except zlib.error as exc:
            raise SpdyProtocolError(f"bad header block compression: {exc}") from exc
        if len(raw) > MAX_HEADER_BLOCK or self._z.unconsumed_tail:
            raise SpdyProtocolError("header block larger than 256 KiB")
        try:
            return decode_header_block(raw)
        except (ValueError, struct.error) as exc:
            raise SpdyProtocolError(f"malformed header block: {exc}") from exc


# ---------------------------------------------------------------- streams


@dataclass
class _StreamState:
    stream_id: int
    send_window: int
    recv_window: int
    local_closed: bool = False
    remote_closed: bool = False
    replied: bool = False          # SYN_REPLY sent (peer's stream) or received (ours)
    pending: bytearray = field(default_factory=bytearray)
    pending_fin: bool = False
    unacked: int = 0               # consumed bytes not yet returned by WINDOW_UPDATE


class SpdyConnection:
    """One SPDY/3.1 session, client or server side, without I/O."""

    def __init__(self, client_side: bool, flow_control: FlowControlMode = "strict",
                 initial_window: int = DEFAULT_WINDOW) -> None:
        self.client_side = client_side
        self._mode = flow_control
        self._peer_does_flow_control = flow_control == "strict"
        self._throttle_sends = True
        self._out = bytearray()
        self._inbuf = bytearray()
        self._compressor = _HeaderCompressor()
        self._decompressor = _HeaderDecompressor()
        self._streams: dict[int, _StreamState] = {}
        self._recently_closed: deque[int] = deque(maxlen=256)
        self._next_stream_id = 1 if client_side else 2
        self._next_ping_id = 1 if client_side else 2
        self._last_peer_stream_id = 0
        self._outstanding_pings: set[int] = set()
        # Windows: ours (what the peer may send us) and the peer's (what we may send).
        self._local_initial_window = initial_window
        self._peer_initial_window = DEFAULT_WINDOW
        self._session_recv_window = DEFAULT_WINDOW
        self._session_unacked = 0
        self._session_send_window = DEFAULT_WINDOW
        self.peer_settings: dict[int, int] = {}
        self.goaway_sent = False
        self.goaway_received = False
        self.closed = False
        if initial_window != DEFAULT_WINDOW:
            self.send_settings({Setting.INITIAL_WINDOW_SIZE: initial_window})

    # ------------------------------------------------------------ properties

    @property
    def peer_does_flow_control(self) -> bool:
        return self._peer_does_flow_control

    def open_stream_ids(self) -> list[int]:
        return list(self._streams)

    def stream_is_open(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def remote_closed(self, stream_id: int) -> bool:
        st = self._streams.get(stream_id)
        return st is None or st.remote_closed

    def local_closed(self, stream_id: int) -> bool:
        st = self._streams.get(stream_id)
        return st is None or st.local_closed or st.pending_fin

    def pending_outbound(self, stream_id: int) -> int:
        """Bytes of DATA queued on the stream, waiting for the peer's window."""
        st = self._streams.get(stream_id)
        return len(st.pending) if st else 0

    def send_window(self, stream_id: int) -> int:
        """What we may still send on a stream right now (stream and session windows)."""
        st = self._streams.get(stream_id)
        if st is None:
            return 0
        return min(st.send_window, self._session_send_window)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    # ------------------------------------------------------------ frame writers

    def _control(self, ftype: int, flags: int, payload: bytes) -> None:
        if len(payload) > MAX_FRAME_LENGTH:
            raise SpdyStreamError("control frame too large")
        self._out += struct.pack(">HHI", 0x8000 | SPDY_VERSION, ftype,
                                 (flags << 24) | len(payload))
        self._out += payload

    def _data_frame(self, stream_id: int, data: bytes | bytearray, fin: bool) -> None:
        self._out += struct.pack(">II", stream_id & 0x7FFFFFFF,
                                 ((FLAG_FIN if fin else 0) << 24) | len(data))
        self._out += data

    # ------------------------------------------------------------ local actions

    def open_stream(self, headers: Headers, fin: bool = False, unidirectional: bool = False,
                    priority: int = 0, associated_stream_id: int = 0) -> int:
        """Send SYN_STREAM; returns the new stream id."""
        if self.goaway_received or self.goaway_sent or self.closed:
            raise SpdyStreamError("session is going away; no new streams")
        stream_id = self._next_stream_id
        if stream_id > 0x7FFFFFFF:
            raise SpdyStreamError("stream ids exhausted")
        self._next_stream_id += 2
        block = self._compressor.compress(headers)
        payload = struct.pack(">IIBB", stream_id, associated_stream_id & 0x7FFFFFFF,
                              (priority & 0x7) << 5, 0) + block
        flags = (FLAG_FIN if fin else 0) | (FLAG_UNIDIRECTIONAL if unidirectional else 0)
        self._control(FrameType.SYN_STREAM, flags, payload)
        self._streams[stream_id] = _StreamState(
            stream_id, self._peer_initial_window, self._local_initial_window,
            local_closed=fin, remote_closed=unidirectional)
        self._maybe_forget(stream_id)
        return stream_id

    def reply(self, stream_id: int, headers: Headers, fin: bool = False) -> None:
        """Send SYN_REPLY on a stream the peer opened."""
        st = self._require(stream_id)
        if st.replied:
            raise SpdyStreamError(f"stream {stream_id} already replied")
        st.replied = True
        payload = struct.pack(">I", stream_id) + self._compressor.compress(headers)
        self._control(FrameType.SYN_REPLY, FLAG_FIN if fin else 0, payload)
        if fin:
            st.local_closed = True
            self._maybe_forget(stream_id)

    def send_headers(self, stream_id: int, headers: Headers, fin: bool = False) -> None:
        st = self._require(stream_id)
        if st.local_closed or st.pending_fin:
            raise SpdyStreamError(f"stream {stream_id} is closed for sending")
        payload = struct.pack(">I", stream_id) + self._compressor.compress(headers)
        self._control(FrameType.HEADERS, FLAG_FIN if fin else 0, payload)
        if fin:
            st.local_closed = True
            self._maybe_forget(stream_id)

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Queue DATA; it goes out as far as the peer's windows allow (see pending_outbound)."""
        st = self._require(stream_id)
        if st.local_closed or st.pending_fin:
            raise SpdyStreamError(f"stream {stream_id} is closed for sending")
        st.pending += data
        st.pending_fin = fin
        self._flush_stream(st)

    def end_stream(self, stream_id: int) -> None:
        """Half-close our direction (an empty DATA frame with FIN, after queued data)."""
        st = self._streams.get(stream_id)
        if st is None or st.local_closed or st.pending_fin:
            return
        self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        self._control(FrameType.RST_STREAM, 0, struct.pack(">II", stream_id & 0x7FFFFFFF,
                                                           status))
        self._forget(stream_id)

    def ping(self) -> int:
        ping_id = self._next_ping_id
        self._next_ping_id = (self._next_ping_id + 2) & 0xFFFFFFFF
        self._outstanding_pings.add(ping_id)
        self._control(FrameType.PING, 0, struct.pack(">I", ping_id))
        return ping_id

    def send_settings(self, settings: dict[int, int]) -> None:
        entries = b"".join(struct.pack(">II", int(k) & 0xFFFFFF, v) for k, v in settings.items())
        self._control(FrameType.SETTINGS, 0, struct.pack(">I", len(settings)) + entries)
        iws = settings.get(Setting.INITIAL_WINDOW_SIZE)
        if iws is not None:
            delta = iws - self._local_initial_window
            self._local_initial_window = iws
            for st in self._streams.values():
                st.recv_window += delta

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        if self.goaway_sent:
            return
        self.goaway_sent = True
        self._control(FrameType.GOAWAY, 0, struct.pack(">II", self._last_peer_stream_id, status))

    def acknowledge_received_data(self, stream_id: int, size: int) -> None:
        """The application consumed `size` bytes of DATA: reopen the windows when due."""
        if size <= 0:
            return
        self._session_unacked += size
        if self._session_unacked >= DEFAULT_WINDOW // 2:
            self._window_update(0, self._session_unacked)
            self._session_recv_window += self._session_unacked
            self._session_unacked = 0
        st = self._streams.get(stream_id)
        if st is None or st.remote_closed:
            return
        st.unacked += size
        if st.unacked >= self._local_initial_window // 2:
            self._window_update(stream_id, st.unacked)
            st.recv_window += st.unacked
            st.unacked = 0

    def assume_peer_ignores_flow_control(self) -> None:
        """Auto mode only: stop throttling DATA for a peer that never sent a window update."""
        if self._mode == "auto" and not self._peer_does_flow_control:
            self._throttle_sends = False
            for st in list(self._streams.values()):
                self._flush_stream(st)

    def _window_update(self, stream_id: int, delta: int) -> None:
        self._control(FrameType.WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))

    # ------------------------------------------------------------ outbound flow control

    def _flush_stream(self, st: _StreamState) -> None:
        while st.pending:
            if self._throttle_sends:
                allowed = min(st.send_window, self._session_send_window, MAX_DATA_FRAME)
            else:
                allowed = MAX_DATA_FRAME
            if allowed <= 0:
                return
            chunk = bytes(st.pending[:allowed])
            del st.pending[:allowed]
            st.send_window -= len(chunk)
            self._session_send_window -= len(chunk)
            fin = st.pending_fin and not st.pending
            self._data_frame(st.stream_id, chunk, fin)
            if fin:
                st.local_closed = True
                self._maybe_forget(st.stream_id)
                return
        if st.pending_fin and not st.local_closed:
            self._data_frame(st.stream_id, b"", True)
            st.local_closed = True
            self._maybe_forget(st.stream_id)

    def _flush_all(self) -> None:
        for st in list(self._streams.values()):
            if st.pending or (st.pending_fin and not st.local_closed):
                self._flush_stream(st)

    # ------------------------------------------------------------ bookkeeping

    def _require(self, stream_id: int) -> _StreamState:
        st = self._streams.get(stream_id)
        if st is None:
            raise SpdyStreamError(f"stream {stream_id} is not open")
        return st

    def _maybe_forget(self, stream_id: int) -> None:
        st = self._streams.get(stream_id)
        if st and st.local_closed and st.remote_closed and not st.pending:
            self._forget(stream_id)

    def _forget(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._recently_closed.append(stream_id)

    def _peer_stream_count(self) -> int:
        return sum(1 for sid in self._streams if self._is_peer_id(sid))

    def _is_peer_id(self, stream_id: int) -> bool:
        return (stream_id % 2 == 0) if self.client_side else (stream_id % 2 == 1)

    # ------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; returns the events of every complete frame."""
        if self.closed:
            return []
        self._inbuf += data
        events: list[Event] = []
        try:
            while len(self._inbuf) >= 8:
                word1, word2 = struct.unpack_from(">II", self._inbuf)
                length = word2 & 0xFFFFFF
                if len(self._inbuf) < 8 + length:
                    break
                flags = word2 >> 24
                payload = bytes(self._inbuf[8:8 + length])
                del self._inbuf[:8 + length]
                if word1 & 0x80000000:
                    version = (word1 >> 16) & 0x7FFF
                    if version != SPDY_VERSION:
                        raise SpdyProtocolError(f"unsupported SPDY version {version}")
                    self._on_control(word1 & 0xFFFF, flags, payload, events)
                else:
                    self._on_data(word1 & 0x7FFFFFFF, flags, payload, events)
        except SpdyProtocolError as exc:
            self.goaway(exc.status)
            self.closed = True
            raise
        self._flush_all()
        return events

    def _on_control(self, ftype: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if ftype == FrameType.SYN_STREAM:
            self._on_syn_stream(flags, payload, events)
        elif ftype == FrameType.SYN_REPLY:
            sid = self._stream_id_of(payload, 4)
            headers = self._decompressor.decompress(payload[4:])
            st = self._streams.get(sid)
            if st is None:
                return
            if st.replied:
                self.reset_stream(sid, RstStatus.STREAM_IN_USE)
                events.append(StreamReset(sid, RstStatus.STREAM_IN_USE, remote=False))
                return
            st.replied = True
            events.append(ReplyReceived(sid, headers, bool(flags & FLAG_FIN)))
            self._remote_fin(st, flags, events)
        elif ftype == FrameType.HEADERS:
            sid = self._stream_id_of(payload, 4)
            headers = self._decompressor.decompress(payload[4:])
            st = self._streams.get(sid)
            if st is None:
                return
            events.append(HeadersReceived(sid, headers, bool(flags & FLAG_FIN)))
            self._remote_fin(st, flags, events)
        elif ftype == FrameType.RST_STREAM:
            if len(payload) != 8:
                raise SpdyProtocolError("RST_STREAM frame must be 8 bytes")
            sid, status = struct.unpack(">II", payload)
            sid &= 0x7FFFFFFF
            if sid in self._streams:
                self._forget(sid)
                events.append(StreamReset(sid, status, remote=True))
        elif ftype == FrameType.SETTINGS:
            self._on_settings(flags, payload, events)
        elif ftype == FrameType.PING:
            if len(payload) != 4:
                raise SpdyProtocolError("PING frame must be 4 bytes")
            (ping_id,) = struct.unpack(">I", payload)
            if ping_id in self._outstanding_pings:
                self._outstanding_pings.discard(ping_id)
                events.append(PingAcknowledged(ping_id))
            elif (ping_id % 2 == 1) != self.client_side:
                self._control(FrameType.PING, 0, payload)
                events.append(PingReceived(ping_id))
            # an unsolicited echo of an id we never sent: ignored, as the spec says
        elif ftype == FrameType.GOAWAY:
            if len(payload) < 4:
                raise SpdyProtocolError("GOAWAY frame too short")
            last = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
            status = struct.unpack_from(">I", payload, 4)[0] if len(payload) >= 8 else 0
            self.goaway_received = True
            events.append(GoAwayReceived(last, status))
        elif ftype == FrameType.WINDOW_UPDATE:
            if len(payload) != 8:
                raise SpdyProtocolError("WINDOW_UPDATE frame must be 8 bytes")
            sid, delta = struct.unpack(">II", payload)
            sid &= 0x7FFFFFFF
            delta &= 0x7FFFFFFF
            self._saw_peer_flow_control()
            if delta == 0:
                raise SpdyProtocolError("WINDOW_UPDATE with a zero delta")
            if sid == 0:
                self._session_send_window += delta
                if self._session_send_window > MAX_WINDOW:
                    raise SpdyProtocolError("session send window overflow")
            else:
                st = self._streams.get(sid)
                if st is None:
                    return
                st.send_window += delta
                if st.send_window > MAX_WINDOW:
                    self.reset_stream(sid, RstStatus.FLOW_CONTROL_ERROR)
                    events.append(StreamReset(sid, RstStatus.FLOW_CONTROL_ERROR, remote=False))
                    return
            events.append(WindowUpdated(sid, delta))
        # CREDENTIAL and unknown control frame types are ignored.

    def _stream_id_of(self, payload: bytes, minimum: int) -> int:
        if len(payload) < minimum:
            raise SpdyProtocolError("control frame too short")
        sid: int = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
        if sid == 0:
            raise SpdyProtocolError("stream id 0 in a stream frame")
        return sid

    def _on_syn_stream(self, flags: int, payload: bytes, events: list[Event]) -> None:
        sid = self._stream_id_of(payload, 10)
        assoc = struct.unpack_from(">I", payload, 4)[0] & 0x7FFFFFFF
        priority = payload[8] >> 5
        # Decompress even when refusing: the shared zlib context must stay in sync.
        headers = self._decompressor.decompress(payload[10:])
        if not self._is_peer_id(sid):
            raise SpdyProtocolError(f"peer opened stream {sid} with our parity")
        if sid <= self._last_peer_stream_id:
            # A reused id: a stream error. If that stream is still open, the
            # application must hear that it is gone, not find it forgotten.
            was_open = sid in self._streams
            self.reset_stream(sid, RstStatus.PROTOCOL_ERROR)
            if was_open:
                events.append(StreamReset(sid, RstStatus.PROTOCOL_ERROR, remote=False))
            return
        self._last_peer_stream_id = sid
        if self.goaway_sent or self._peer_stream_count() >= MAX_PEER_STREAMS:
            self.reset_stream(sid, RstStatus.REFUSED_STREAM)
            return
        fin = bool(flags & FLAG_FIN)
        uni = bool(flags & FLAG_UNIDIRECTIONAL)
        self._streams[sid] = _StreamState(sid, self._peer_initial_window,
                                          self._local_initial_window,
                                          local_closed=uni, remote_closed=fin)
        events.append(StreamOpened(sid, headers, assoc, priority, fin, uni))
        if fin:
            events.append(StreamEnded(sid))

    def _on_settings(self, flags: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) < 4:
            raise SpdyProtocolError("SETTINGS frame too short")
        (count,) = struct.unpack_from(">I", payload)
        if len(payload) != 4 + 8 * count:
            raise SpdyProtocolError("SETTINGS frame length does not match its entry count")
        settings: dict[int, int] = {}
        for i in range(count):
            id_word, value = struct.unpack_from(">II", payload, 4 + 8 * i)
            settings[id_word & 0xFFFFFF] = value
        self.peer_settings.update(settings)
        iws = settings.get(Setting.INITIAL_WINDOW_SIZE)
        if iws is not None:
            if iws > MAX_WINDOW:
                raise SpdyProtocolError("INITIAL_WINDOW_SIZE above 2^31-1")
            self._saw_peer_flow_control()
            delta = iws - self._peer_initial_window
            self._peer_initial_window = iws
            for st in self._streams.values():
                st.send_window += delta
        events.append(SettingsReceived(settings))

    def _saw_peer_flow_control(self) -> None:
        if not self._peer_does_flow_control:
            self._peer_does_flow_control = True
            self._throttle_sends = True

    def _on_data(self, sid: int, flags: int, payload: bytes, events: list[Event]) -> None:
        if sid == 0:
            raise SpdyProtocolError("DATA frame on stream 0")
        size = len(payload)
        self._session_recv_window -= size
        if self._session_recv_window < 0:
            if self._mode == "strict":
                raise SpdyProtocolError("peer overran the session flow-control window")
            self._session_recv_window = 0
        st = self._streams.get(sid)
        if st is None:
            # Data for a stream that is gone: give the session window back right away.
            self.acknowledge_received_data(sid, size)
            if sid not in self._recently_closed:
                self.reset_stream(sid, RstStatus.INVALID_STREAM)
            return
        if st.remote_closed:
            self.acknowledge_received_data(sid, size)
            self.reset_stream(sid, RstStatus.STREAM_ALREADY_CLOSED)
            events.append(StreamReset(sid, RstStatus.STREAM_ALREADY_CLOSED, remote=False))
            return
        if not self._is_peer_id(sid) and not st.replied:
            raise SpdyProtocolError(f"DATA on stream {sid} before its SYN_REPLY")
        st.recv_window -= size
        if st.recv_window < 0:
            if self._mode == "strict":
                self.acknowledge_received_data(sid, size)
                self.reset_stream(sid, RstStatus.FLOW_CONTROL_ERROR)
                events.append(StreamReset(sid, RstStatus.FLOW_CONTROL_ERROR, remote=False))
                return
            st.recv_window = 0
        fin = bool(flags & FLAG_FIN)
        if size or not fin:
            events.append(DataReceived(sid, payload, fin))
        self._remote_fin(st, flags, events)

    def _remote_fin(self, st: _StreamState, flags: int, events: list[Event]) -> None:
        if flags & FLAG_FIN and not st.remote_closed:
            st.remote_closed = True
            events.append(StreamEnded(st.stream_id))
            self._maybe_forget(st.stream_id)
