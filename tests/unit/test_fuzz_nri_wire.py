"""Fuzzing NRI's wire layers: ttrpc frames and stream state machines, and the multiplexer.

Whatever bytes a plugin sends, the ttrpc state machines yield events and queue well-formed
answers, never raise, and buffer at most one frame; the demultiplexer yields payload or
raises MuxError (its documented terminal error). Seeds are the frames an NRI plugin sends:
RegisterPlugin over the Runtime connection and answers to Configure and CreateContainer.
"""
from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from nri import mux, ttrpc
from nri.ttrpc import ClientConnection, Frame, FrameDecoder, MessageType, ServerConnection
from proto import nri_api_pb2, ttrpc_pb2
from tests.support.fuzz import chunked, fuzz_settings, mutated

MAX = 256  # a small limit, so that oversized frames are reachable


def _req(sid: int, method: str, msg: bytes) -> bytes:
    body = ttrpc_pb2.Request(service="nri.pkg.api.v1alpha1.Runtime", method=method,
                             payload=msg).SerializeToString()
    return ttrpc.encode_frame(sid, MessageType.REQUEST, 0, body)


def _resp(sid: int, msg: bytes, code: int = 0) -> bytes:
    body = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code), payload=msg).SerializeToString()
    return ttrpc.encode_frame(sid, MessageType.RESPONSE, 0, body)


REGISTER = nri_api_pb2.RegisterPluginRequest(plugin_name="logger", plugin_idx="10",
                                             NRI_version="v0.12.1").SerializeToString()
CONFIGURED = nri_api_pb2.ConfigureResponse(events=0x7FFF).SerializeToString()
ADJUST = nri_api_pb2.CreateContainerResponse(adjust=nri_api_pb2.ContainerAdjustment(
    env=[nri_api_pb2.KeyValue(key="A", value="1")])).SerializeToString()
SERVER_SEEDS = [_req(1, "RegisterPlugin", REGISTER),
                _req(1, "RegisterPlugin", REGISTER) + _req(3, "UpdateContainers", b"")]
CLIENT_SEEDS = [_resp(1, CONFIGURED) + _resp(3, ADJUST), _resp(3, b"", 2) + _resp(1, b"")]


frames_st = st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 255),
                               st.integers(0, 255), st.binary(max_size=64)), max_size=8)


@fuzz_settings(200)
@given(frames_st, st.lists(st.integers(0, 10_000), max_size=10))
def test_frames_survive_any_fragmentation(frames: list[tuple[int, int, int, bytes]],
                                          cuts: list[int]) -> None:
    raw = b"".join(ttrpc.encode_frame(s, t, f, d) for s, t, f, d in frames)
    dec = FrameDecoder()
    got = [x for piece in chunked(raw, cuts) for x in dec.feed(piece)]
    assert got == [Frame(*f) for f in frames]
    assert dec.buffered == 0


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=600), mutated(SERVER_SEEDS)),
       st.lists(st.integers(0, 10_000), max_size=6))
@example(b"\x00\x00\x10\x00\x00\x00\x00\x01\x01\x00" + b"\0" * 300, [])
def test_server_answers_anything_with_well_formed_frames(data: bytes, cuts: list[int]) -> None:
    srv = ServerConnection(max_active=4, max_length=MAX)
    reqs = [r for piece in chunked(data, cuts) for r in srv.receive_data(piece)]
    assert len(srv.active) <= 4
    assert {r.stream_id for r in reqs} == srv.active
    assert all(r.stream_id % 2 == 1 for r in reqs)
    ids = [r.stream_id for r in reqs]
    assert ids == sorted(set(ids))  # strictly increasing, never reused
    for r in reqs:
        assert srv.send_response(r.stream_id, r.payload)
    out = FrameDecoder(MAX).feed(srv.data_to_send())
    for f in out:
        assert isinstance(f, Frame) and f.type == MessageType.RESPONSE
        ttrpc_pb2.Response().ParseFromString(f.data)
    assert len(out) == srv.errors_sent + len(reqs)
    assert srv._decoder.buffered <= ttrpc.HEADER_LENGTH + MAX + max(map(len, chunked(data, cuts)),
                                                                    default=0)


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=600), mutated(CLIENT_SEEDS)),
       st.lists(st.integers(0, 10_000), max_size=6))
def test_client_answers_each_call_at_most_once(data: bytes, cuts: list[int]) -> None:
    cli = ClientConnection(max_length=MAX)
    calls = {cli.send_request("s", "m", b"") for _ in range(3)}
    got = [r for piece in chunked(data, cuts) for r in cli.receive_data(piece)]
    ids = [r.stream_id for r in got]
    assert len(ids) == len(set(ids)) and set(ids) <= calls
    assert cli.pending == calls - set(ids)
    assert {r.stream_id for r in cli.connection_lost()} == calls - set(ids)


@fuzz_settings(200)
@given(st.lists(st.tuples(st.sampled_from([1, 2, 3]), st.binary(max_size=40)), max_size=10),
       st.lists(st.integers(0, 10_000), max_size=10), st.integers(1, 16))
def test_mux_round_trip_with_any_fragmentation(writes: list[tuple[int, bytes]],
                                               cuts: list[int], max_payload: int) -> None:
    raw = b"".join(mux.encode(c, d, max_payload) for c, d in writes)
    d = mux.Demux([1, 2], max_payload)
    got = [x for piece in chunked(raw, cuts) for x in d.feed(piece)]
    for conn in (1, 2):
        assert b"".join(c for i, c in got if i == conn) == \
            b"".join(data for i, data in writes if i == conn)
    assert d.dropped_bytes == sum(len(data) for i, data in writes if i == 3)
    assert not d.mid_frame


@fuzz_settings(300)
@given(st.one_of(st.binary(max_size=400),
                 mutated([mux.encode(2, s) for s in SERVER_SEEDS])))
def test_demux_yields_payload_or_mux_error(data: bytes) -> None:
    d = mux.Demux([1, 2], max_payload=MAX)
    try:
        got = d.feed(data)
    except mux.MuxError:
        return
    assert sum(len(c) for _, c in got) + d.dropped_bytes <= len(data)
    assert all(conn in (1, 2) and chunk for conn, chunk in got)
