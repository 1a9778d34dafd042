"""The SPDY/3.1 state machine: framing, header compression, streams, flow control."""
from __future__ import annotations

import hashlib
import random
import struct
import zlib

import pytest

from cri_server.streaming import spdy
from cri_server.streaming.spdy_dictionary import SPDY3_DICTIONARY


def pair(mode: spdy.FlowControlMode = "strict") -> tuple[spdy.SpdyConnection,
                                                         spdy.SpdyConnection]:
    return spdy.SpdyConnection(True, mode), spdy.SpdyConnection(False, mode)


def pump(src: spdy.SpdyConnection, dst: spdy.SpdyConnection) -> list[spdy.Event]:
    return dst.receive_data(src.data_to_send())


def of_type(events: list[spdy.Event], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


def test_dictionary_is_the_spdy3_constant() -> None:
    # sha256 of the 1423-byte dictionary of the SPDY/3 specification.
    assert len(SPDY3_DICTIONARY) == 1423
    assert hashlib.sha256(SPDY3_DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02")


def test_header_block_round_trip_and_multi_values() -> None:
    block = spdy.encode_header_block([("StreamType", "error"), ("x", "a\x00b")])
    assert block[:4] == b"\x00\x00\x00\x02"
    assert spdy.decode_header_block(block) == [("streamtype", "error"), ("x", "a"), ("x", "b")]
    with pytest.raises(ValueError):
        spdy.decode_header_block(block[:-1])


def test_syn_stream_built_by_hand_is_parsed() -> None:
    """A frame made with plain zlib + the dictionary (not our encoder) decodes."""
    raw = struct.pack(">I", 1) + struct.pack(">I", 10) + b"streamtype" + struct.pack(">I", 5) \
        + b"error"
    z = zlib.compressobj(zdict=SPDY3_DICTIONARY)
    block = z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIBB", 1, 0, 0, 0) + block
    frame = struct.pack(">HHI", 0x8003, 1, len(payload)) + payload
    server = spdy.SpdyConnection(client_side=False)
    events = server.receive_data(frame)
    assert events == [spdy.StreamOpened(1, [("streamtype", "error")])]


def test_open_reply_data_fin_both_ways() -> None:
    client, server = pair()
    sid = client.open_stream([("streamType", "stdout")])
    assert sid == 1
    events = pump(client, server)
    assert events == [spdy.StreamOpened(1, [("streamtype", "stdout")])]
    server.reply(1, [])
    assert pump(server, client) == [spdy.ReplyReceived(1, [])]
    server.send_data(1, b"hello", fin=True)
    events = pump(server, client)
    assert events == [spdy.DataReceived(1, b"hello", True), spdy.StreamEnded(1)]
    assert client.stream_is_open(1)  # our side is still open
    client.end_stream(1)
    assert pump(client, server) == [spdy.StreamEnded(1)]
    assert not client.stream_is_open(1) and not server.stream_is_open(1)
    assert client.open_stream([]) == 3  # client ids odd and increasing


def test_server_stream_ids_are_even() -> None:
    client, server = pair()
    assert server.open_stream([("a", "b")]) == 2
    assert of_type(pump(server, client), spdy.StreamOpened)[0].stream_id == 2


def test_random_chunking_gives_the_same_events() -> None:
    rng = random.Random(1234)
    for _ in range(30):
        client, _server = pair()
        for i in range(rng.randint(1, 6)):
            sid = client.open_stream([("streamtype", f"s{i}"), ("requestid", str(i))],
                                     fin=rng.random() < 0.2)
            if not client.local_closed(sid):
                client.send_data(sid, rng.randbytes(rng.randint(0, 5000)),
                                 fin=rng.random() < 0.5)
        client.ping()
        wire = client.data_to_send()
        whole = spdy.SpdyConnection(False).receive_data(wire)
        chunked_conn = spdy.SpdyConnection(False)
        chunked: list[spdy.Event] = []
        pos = 0
        while pos < len(wire):
            n = rng.randint(1, 40)
            chunked += chunked_conn.receive_data(wire[pos:pos + n])
            pos += n
        assert chunked == whole
        assert of_type(whole, spdy.PingReceived)


def _open_replied(client: spdy.SpdyConnection, server: spdy.SpdyConnection) -> int:
    sid = client.open_stream([("streamtype", "stdout")])
    pump(client, server)
    server.reply(sid, [])
    pump(server, client)
    return sid


def test_sender_honours_the_peer_window_and_resumes_on_window_update() -> None:
    client, server = pair()
    sid = _open_replied(client, server)
    payload = bytes(range(256)) * 800  # 200 KiB
    server.send_data(sid, payload, fin=True)
    events = pump(server, client)
    received = b"".join(e.data for e in of_type(events, spdy.DataReceived))
    assert len(received) == spdy.DEFAULT_WINDOW
    assert server.pending_outbound(sid) == len(payload) - spdy.DEFAULT_WINDOW
    while server.pending_outbound(sid) or not of_type(events, spdy.StreamEnded):
        # The client consumes what it got; half a window triggers WINDOW_UPDATEs.
        for e in of_type(events, spdy.DataReceived):
            client.acknowledge_received_data(sid, len(e.data))
        updates = pump(client, server)
        assert of_type(updates, spdy.WindowUpdated)
        events = pump(server, client)
        chunk = b"".join(e.data for e in of_type(events, spdy.DataReceived))
        assert chunk, "no progress after a window update"
        received += chunk
    assert received == payload


def test_session_window_limits_all_streams_together() -> None:
    client, server = pair()
    sids = [_open_replied(client, server) for _ in range(3)]
    for sid in sids:
        server.send_data(sid, b"x" * 40000)
    events = pump(server, client)
    total = sum(len(e.data) for e in of_type(events, spdy.DataReceived))
    assert total == spdy.DEFAULT_WINDOW  # 3 x 40000 > one 64 KiB session window


def test_initial_window_setting_changes_send_windows() -> None:
    client, server = pair()
    sid = _open_replied(client, server)
    client.send_settings({spdy.Setting.INITIAL_WINDOW_SIZE: 1000})
    assert of_type(pump(client, server), spdy.SettingsReceived)
    assert server.send_window(sid) == 1000
    server.send_data(sid, b"y" * 3000)
    events = pump(server, client)
    assert sum(len(e.data) for e in of_type(events, spdy.DataReceived)) == 1000


def test_strict_receiver_resets_a_stream_that_overruns_its_window() -> None:
    client, server = pair()
    sid = _open_replied(client, server)
    client.send_settings({spdy.Setting.INITIAL_WINDOW_SIZE: 1000})  # our streams: 1000 bytes
    client.data_to_send()
    # Forge an overrun: a raw DATA frame bigger than the stream's window.
    frame = struct.pack(">II", sid, 1001) + b"z" * 1001
    events = client.receive_data(frame)
    assert of_type(events, spdy.StreamReset)[0].status == spdy.RstStatus.FLOW_CONTROL_ERROR
    assert not client.stream_is_open(sid)


def test_strict_receiver_ends_a_session_that_overruns_the_session_window() -> None:
    client, server = pair()
    sid = _open_replied(client, server)
    frame = struct.pack(">II", sid, spdy.DEFAULT_WINDOW + 1) + b"z" * (spdy.DEFAULT_WINDOW + 1)
    with pytest.raises(spdy.SpdyProtocolError):
        client.receive_data(frame)
    assert client.goaway_sent


def test_auto_mode_throttles_until_the_peer_is_known_to_ignore_windows() -> None:
    client = spdy.SpdyConnection(True, "strict")
    server = spdy.SpdyConnection(False, "auto")
    sid = _open_replied(client, server)
    server.send_data(sid, b"q" * 100000)
    assert server.pending_outbound(sid) == 100000 - spdy.DEFAULT_WINDOW
    server.assume_peer_ignores_flow_control()
    assert server.pending_outbound(sid) == 0


def test_auto_mode_stays_strict_for_a_peer_that_does_flow_control() -> None:
    client = spdy.SpdyConnection(True, "strict")
    server = spdy.SpdyConnection(False, "auto")
    client.send_settings({spdy.Setting.INITIAL_WINDOW_SIZE: spdy.DEFAULT_WINDOW})
    sid = _open_replied(client, server)
    assert server.peer_does_flow_control
    server.send_data(sid, b"q" * 100000)
    server.assume_peer_ignores_flow_control()
    assert server.pending_outbound(sid) == 100000 - spdy.DEFAULT_WINDOW


def test_auto_mode_tolerates_overrun_from_a_peer_without_flow_control() -> None:
    client = spdy.SpdyConnection(True, "auto")
    server = spdy.SpdyConnection(False, "auto")
    sid = _open_replied(client, server)
    client.assume_peer_ignores_flow_control()
    client.send_data(sid, b"w" * 200000)
    events = pump(client, server)
    assert sum(len(e.data) for e in of_type(events, spdy.DataReceived)) == 200000
    assert not of_type(events, spdy.StreamReset)


def test_ping_is_answered_and_acknowledged() -> None:
    client, server = pair()
    ping_id = client.ping()
    assert ping_id % 2 == 1
    assert pump(client, server) == [spdy.PingReceived(ping_id)]
    assert pump(server, client) == [spdy.PingAcknowledged(ping_id)]


def test_goaway_stops_new_streams() -> None:
    client, server = pair()
    _open_replied(client, server)
    server.goaway()
    events = pump(server, client)
    assert events == [spdy.GoAwayReceived(1, spdy.GoAwayStatus.OK)]
    with pytest.raises(spdy.SpdyStreamError):
        client.open_stream([])


def test_streams_opened_after_our_goaway_are_refused() -> None:
    client, server = pair()
    server.goaway()
    client.open_stream([])
    assert pump(client, server) == []
    reset = struct.unpack(">II", server.data_to_send()[-8:])
    assert reset == (1, spdy.RstStatus.REFUSED_STREAM)


def test_rst_stream_from_peer_forgets_the_stream() -> None:
    client, server = pair()
    sid = _open_replied(client, server)
    client.reset_stream(sid, spdy.RstStatus.CANCEL)
    assert pump(client, server) == [spdy.StreamReset(sid, spdy.RstStatus.CANCEL)]
    assert not server.stream_is_open(sid)
    with pytest.raises(spdy.SpdyStreamError):
        server.send_data(sid, b"late")


def test_data_for_an_unknown_stream_is_reset_invalid() -> None:
    server = spdy.SpdyConnection(False)
    assert server.receive_data(struct.pack(">II", 7, 3) + b"abc") == []
    frame = server.data_to_send()
    assert struct.unpack(">HHI", frame[:8])[1] == spdy.FrameType.RST_STREAM
    assert struct.unpack(">II", frame[8:16]) == (7, spdy.RstStatus.INVALID_STREAM)


def test_wrong_parity_is_a_session_error_with_goaway() -> None:
    client, server = pair()
    client._next_stream_id = 2  # a broken client using the server's ids
    client.open_stream([])
    with pytest.raises(spdy.SpdyProtocolError):
        pump(client, server)
    frame = server.data_to_send()
    assert struct.unpack(">HH", frame[:4])[1] == spdy.FrameType.GOAWAY
    assert server.closed


def test_decreasing_stream_id_is_reset() -> None:
    client, server = pair()
    client._next_stream_id = 5
    client.open_stream([])
    client._next_stream_id = 3
    client.open_stream([])
    events = pump(client, server)
    assert [e.stream_id for e in of_type(events, spdy.StreamOpened)] == [5]
    assert struct.unpack(">II", server.data_to_send()[-8:]) == (3, spdy.RstStatus.PROTOCOL_ERROR)


def test_unsupported_version_and_garbage_header_block_are_protocol_errors() -> None:
    server = spdy.SpdyConnection(False)
    with pytest.raises(spdy.SpdyProtocolError):
        server.receive_data(struct.pack(">HHI", 0x8002, 1, 10) + b"\x00" * 10)
    server = spdy.SpdyConnection(False)
    bad = struct.pack(">IIBB", 1, 0, 0, 0) + b"not zlib at all"
    with pytest.raises(spdy.SpdyProtocolError):
        server.receive_data(struct.pack(">HHI", 0x8003, 1, len(bad)) + bad)


def test_unknown_control_frames_are_ignored() -> None:
    server = spdy.SpdyConnection(False)
    assert server.receive_data(struct.pack(">HHI", 0x8003, 0x55, 3) + b"abc") == []
    assert server.data_to_send() == b""


def test_headers_frame_and_fin_on_reply() -> None:
    client, server = pair()
    sid = client.open_stream([("a", "1")])
    pump(client, server)
    server.reply(sid, [("b", "2")], fin=True)
    events = pump(server, client)
    assert events == [spdy.ReplyReceived(sid, [("b", "2")], True), spdy.StreamEnded(sid)]
    client.send_headers(sid, [("c", "3")], fin=True)
    assert pump(client, server) == [spdy.HeadersReceived(sid, [("c", "3")], True),
                                    spdy.StreamEnded(sid)]
    assert not client.stream_is_open(sid) and not server.stream_is_open(sid)


def test_too_many_peer_streams_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spdy, "MAX_PEER_STREAMS", 3)
    client, server = pair()
    for _ in range(4):
        client.open_stream([])
    events = pump(client, server)
    assert [e.stream_id for e in of_type(events, spdy.StreamOpened)] == [1, 3, 5]
    assert struct.unpack(">II", server.data_to_send()[-8:]) == (7, spdy.RstStatus.REFUSED_STREAM)


def _control_frame(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8003, ftype, (flags << 24) | len(payload)) + payload


def test_header_block_decompression_bomb_is_a_protocol_error() -> None:
    z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, zdict=SPDY3_DICTIONARY)
    bomb = z.compress(b"\0" * (64 * 1024 * 1024)) + z.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < 128 * 1024
    conn = spdy.SpdyConnection(client_side=False)
    with pytest.raises(spdy.SpdyProtocolError, match="larger than"):
        conn.receive_data(_control_frame(1, 0, struct.pack(">IIBB", 1, 0, 0, 0) + bomb))
    assert conn.closed


def test_random_frames_only_ever_raise_protocol_errors() -> None:
    """Fuzz: malformed input ends the session with SpdyProtocolError, nothing else."""
    rng = random.Random(20261128)
    for _ in range(3000):
        conn = spdy.SpdyConnection(client_side=rng.random() < 0.3,
                                   flow_control=rng.choice(["strict", "auto"]))
        peer = spdy._HeaderCompressor()
        for _ in range(rng.randrange(1, 10)):
            k = rng.random()
            if k < 0.35:
                ftype = rng.choice([1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 0xFFFF])
                payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 4, 8, 10, 20])))
                if ftype in (1, 2, 8) and rng.random() < 0.7:
                    sid = rng.randrange(1, 20)
                    block = peer.compress([("h" * rng.randrange(1, 4), "v")])
                    head = struct.pack(">IIBB", sid, 0, 0, 0) if ftype == 1 else struct.pack(">I", sid)
                    payload = head + block
                frame = _control_frame(ftype, rng.randrange(256), payload)
            elif k < 0.6:
                payload = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
                frame = struct.pack(">II", rng.randrange(20), (rng.randrange(4) << 24)
                                    | len(payload)) + payload
            elif k < 0.8:
                frame = _control_frame(9, 0, struct.pack(">II", rng.randrange(1, 40),
                                                          rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF])))
            else:
                frame = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30)))
            cut = rng.randrange(len(frame) + 1)
            try:
                conn.receive_data(frame[:cut])
                conn.receive_data(frame[cut:])
            except spdy.SpdyProtocolError:
                assert conn.closed
                break
            conn.data_to_send()


def test_second_syn_stream_for_an_open_stream_resets_it_and_says_so() -> None:
    """A peer reusing the id of an open stream gets RST_STREAM(PROTOCOL_ERROR), and the
    application hears that the stream it holds is gone (it used to be forgotten silently)."""
    client, server = pair()
    sid = client.open_stream([("streamType", "stdout")])
    assert of_type(pump(client, server), spdy.StreamOpened)
    # The client's encoder has moved on; forge a second SYN_STREAM with the same id.
    client._next_stream_id = sid
    client.open_stream([("streamType", "stderr")])
    events = pump(client, server)
    assert events == [spdy.StreamReset(sid, spdy.RstStatus.PROTOCOL_ERROR, remote=False)]
    assert of_type(pump(server, client), spdy.StreamReset) == [
        spdy.StreamReset(sid, spdy.RstStatus.PROTOCOL_ERROR, remote=True)]
    # A stale id of a stream that is already gone is refused, and nothing is reported.
    client._next_stream_id = sid
    client.open_stream([("streamType", "stdin")])
    assert pump(client, server) == []
