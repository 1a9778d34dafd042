"""Fuzzing the SPDY/3.1 state machine and its header blocks (cri_server.streaming.spdy).

Whatever bytes a streaming client sends, the parser either yields events or raises
SpdyProtocolError (its documented error: the session is over, a GOAWAY queued); header blocks
decode or raise ValueError (decode_header_block's documented error). Seeds are the frames
crictl/kubectl (Go's spdystream) send for exec and port-forward: header blocks compressed with
one zlib context per direction at BestCompression with the SPDY/3 dictionary, each block ended
with a sync flush.
"""
from __future__ import annotations

import struct
import tracemalloc
import zlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cri_server.streaming import spdy
from cri_server.streaming.spdy_dictionary import SPDY3_DICTIONARY
from tests.support.fuzz import chunked, fuzz_settings, mutated


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload


def _data(sid: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, (flags << 24) | len(payload)) + payload


class _GoCompressor:
    """What spdystream does: zlib.NewWriterLevelDict(BestCompression, dictionary), one per
    connection, a Flush() after every header block."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(9, zlib.DEFLATED, 15, zdict=SPDY3_DICTIONARY)

    def block(self, headers: list[tuple[str, str]]) -> bytes:
        return self._z.compress(spdy.encode_header_block(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)


def _syn_stream(z: _GoCompressor, sid: int, headers: list[tuple[str, str]], flags: int = 0) -> bytes:
    return _control(1, flags, struct.pack(">IIBB", sid, 0, 0, 0) + z.block(headers))


def _exec_session() -> bytes:
    """kubectl exec -i -t: error, stdin, stdout, resize streams; stdin data; a ping; stdin FIN."""
    z = _GoCompressor()
    frames = [_syn_stream(z, sid, [("streamtype", kind)])
              for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize"))]
    frames += [_data(3, 0, b"echo hi\n"), _data(7, 0, b'{"Width":80,"Height":24}'),
               _control(6, 0, struct.pack(">I", 1)), _data(3, spdy.FLAG_FIN, b"")]
    return b"".join(frames)


def _portforward_session() -> bytes:
    """crictl port-forward: an error and a data stream per connection, tied by requestid."""
    z = _GoCompressor()
    return b"".join([
        _syn_stream(z, 1, [("streamtype", "error"), ("port", "8080"), ("requestid", "0")]),
        _syn_stream(z, 3, [("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
        _data(3, 0, b"GET / HTTP/1.0\r\n\r\n"),
        _control(3, 0, struct.pack(">II", 3, 5)),            # RST_STREAM CANCEL
        _control(4, 0, struct.pack(">III", 1, 7, 65536)),    # SETTINGS INITIAL_WINDOW_SIZE
        _control(9, 0, struct.pack(">II", 0, 4096)),         # WINDOW_UPDATE
        _control(7, 0, struct.pack(">II", 3, 0)),            # GOAWAY
    ])


def _single_frames() -> list[bytes]:
    z = _GoCompressor()
    return [
        _syn_stream(z, 1, [("streamtype", "error")]),
        _syn_stream(_GoCompressor(), 1, [("streamtype", "stdout"), ("x", "a\x00b")], spdy.FLAG_FIN),
        _control(2, 0, struct.pack(">I", 2) + _GoCompressor().block([])),   # SYN_REPLY
        _control(8, 0, struct.pack(">I", 1) + _GoCompressor().block([("a", "b")])),  # HEADERS
    ]


SESSIONS = [_exec_session(), _portforward_session()]
SAMPLES = SESSIONS + _single_frames()


def _drive(data_chunks: list[bytes], mode: spdy.FlowControlMode) -> None:
    """Feed the chunks to a server-side connection acting as the streaming server would."""
    conn = spdy.SpdyConnection(client_side=False, flow_control=mode)
    try:
        for chunk in data_chunks:
            for ev in conn.receive_data(chunk):
                if isinstance(ev, spdy.StreamOpened) and conn.stream_is_open(ev.stream_id):
                    conn.reply(ev.stream_id, [])
                    if not conn.local_closed(ev.stream_id):
                        conn.send_data(ev.stream_id, b"out")
                elif isinstance(ev, spdy.DataReceived):
                    conn.acknowledge_received_data(ev.stream_id, len(ev.data))
            conn.data_to_send()
    except spdy.SpdyProtocolError:
        assert conn.closed and conn.goaway_sent


@fuzz_settings(300)
@given(mutated(SAMPLES), st.lists(st.integers(0, 1 << 16), max_size=6),
       st.sampled_from(["auto", "strict"]))
@example(SESSIONS[0], [], "auto")
@example(SESSIONS[1], [1, 9, 40], "strict")
@example(_control(4, 0, struct.pack(">I", 0x80000000)), [], "auto")   # 2^31 settings claimed
@example(_control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0)), [], "auto")  # empty header block
def test_connection_events_or_protocol_error(data: bytes, cuts: list[int], mode: str) -> None:
    _drive(chunked(data, cuts), mode)  # type: ignore[arg-type]


@fuzz_settings(300)
@given(mutated([spdy.encode_header_block(h) for h in (
    [("streamtype", "error")], [("streamtype", "data"), ("port", "8080"), ("requestid", "0")],
    [("x", "a\x00b\x00")], [])]))
@example(struct.pack(">I", 0x7FFFFFFF))                       # claims 2^31-1 entries, has none
@example(struct.pack(">II", 1, 0xFFFFFFFF) + b"a")            # name length beyond the block
@example(struct.pack(">III", 1, 1, 0) + b"\xff")              # not UTF-8, trailing bytes
def test_header_block_decodes_or_value_error(block: bytes) -> None:
    try:
        headers = spdy.decode_header_block(block)
    except ValueError:
        return
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in headers)
    assert len(headers) <= spdy.MAX_HEADER_ENTRIES


def _compressed(raw: bytes) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 15, zdict=SPDY3_DICTIONARY)
    return z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)


@pytest.mark.parametrize("raw", [
    b"\0" * (64 << 20),                                                  # 64 MiB of zeros
    struct.pack(">II", 1, 1) + b"x" + struct.pack(">I", 200_000) + b"\0" * 200_000,  # 200 001 values
    struct.pack(">I", 0x7FFFFFFF) + (struct.pack(">I", 1) + b"n" + struct.pack(">I", 0)) * 20_000,
], ids=["zlib-bomb", "nul-separated-values", "2^31-entries"])
def test_header_block_bombs_are_refused_in_bounded_memory(raw: bytes) -> None:
    """A small compressed block that inflates to far more than a header block may hold, or
    whose entries would cost far more memory than its bytes, is a protocol error; decoding it
    never allocates more than a few MiB."""
    frame = _control(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + _compressed(raw))
    del raw
    assert len(frame) < 256 * 1024
    conn = spdy.SpdyConnection(client_side=False)
    tracemalloc.start()
    try:
        with pytest.raises(spdy.SpdyProtocolError):
            conn.receive_data(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"decoding the block took {peak} bytes"
