"""nri.ttrpc: frames, the server and client stream state machines, routing, every error path."""
from __future__ import annotations

import struct

import pytest

from nri import ttrpc
from nri.ttrpc import (
    ClientConnection,
    Code,
    Frame,
    FrameDecoder,
    MessageType,
    OversizedFrame,
    RequestReceived,
    Router,
    RpcError,
    ServerConnection,
    Status,
    encode_frame,
)
from proto import nri_api_pb2, ttrpc_pb2


def _request(service: str = "svc", method: str = "M", payload: bytes = b"p", **kw: object) -> bytes:
    return ttrpc_pb2.Request(service=service, method=method, payload=payload,
                             **kw).SerializeToString()  # type: ignore[arg-type]


def _responses(data: bytes) -> list[tuple[int, ttrpc_pb2.Response]]:
    out = []
    for f in FrameDecoder().feed(data):
        assert isinstance(f, Frame) and f.type == MessageType.RESPONSE and f.flags == 0
        r = ttrpc_pb2.Response()
        r.ParseFromString(f.data)
        out.append((f.stream_id, r))
    return out


# ---------------------------------------------------------------- frames

def test_header_layout_is_big_endian_length_stream_type_flags() -> None:
    raw = encode_frame(0x01020304, MessageType.DATA, 0x05, b"xyz")
    assert raw == b"\x00\x00\x00\x03" + b"\x01\x02\x03\x04" + b"\x03" + b"\x05" + b"xyz"
    assert len(raw) == ttrpc.HEADER_LENGTH + 3


def test_encode_refuses_more_than_4_mib() -> None:
    assert ttrpc.MAX_MESSAGE_LENGTH == 4 * 1024 * 1024
    encode_frame(1, 1, 0, b"\0" * ttrpc.MAX_MESSAGE_LENGTH)
    with pytest.raises(ValueError, match="exceeds the maximum"):
        encode_frame(1, 1, 0, b"\0" * (ttrpc.MAX_MESSAGE_LENGTH + 1))


def test_decoder_byte_at_a_time_gives_the_same_frames() -> None:
    raw = encode_frame(1, 1, 0, b"hello") + encode_frame(3, 2, 1, b"") + encode_frame(5, 3, 4, b"w")
    whole = FrameDecoder().feed(raw)
    dec = FrameDecoder()
    pieces = [f for b in raw for f in dec.feed(bytes([b]))]
    assert pieces == whole == [Frame(1, 1, 0, b"hello"), Frame(3, 2, 1, b""), Frame(5, 3, 4, b"w")]
    assert dec.buffered == 0


def test_decoder_keeps_a_partial_frame_until_it_completes() -> None:
    raw = encode_frame(7, 1, 0, b"abcdef")
    dec = FrameDecoder()
    assert dec.feed(raw[:12]) == []
    assert dec.buffered == 12
    assert dec.feed(raw[12:]) == [Frame(7, 1, 0, b"abcdef")]


def test_oversized_frame_is_skipped_without_buffering_and_reported() -> None:
    dec = FrameDecoder(max_length=8)
    header = struct.pack(">IIBB", 1000, 9, 1, 0)
    assert dec.feed(header + b"\0" * 500) == []
    assert dec.buffered == 0  # discarded, not kept
    tail = b"\0" * 500 + encode_frame(11, 1, 0, b"ok")
    assert dec.feed(tail) == [OversizedFrame(9, 1, 0, 1000), Frame(11, 1, 0, b"ok")]


def test_a_frame_of_exactly_the_maximum_is_accepted() -> None:
    dec = FrameDecoder(max_length=4)
    assert dec.feed(encode_frame(1, 3, 0, b"abcd")) == [Frame(1, 3, 0, b"abcd")]


# ---------------------------------------------------------------- server

def test_server_yields_a_request_and_answers_it() -> None:
    srv = ServerConnection()
    reqs = srv.receive_data(encode_frame(1, MessageType.REQUEST, 0, _request(
        timeout_nano=5, metadata=[ttrpc_pb2.KeyValue(key="k", value="v")])))
    assert reqs == [RequestReceived(1, "svc", "M", b"p", 5, (("k", "v"),))]
    assert srv.active == {1}
    assert srv.send_response(1, b"answer")
    [(sid, resp)] = _responses(srv.data_to_send())
    assert sid == 1 and resp.payload == b"answer" and resp.status.code == 0
    assert srv.active == set()
    assert not srv.send_response(1, b"twice")  # a stream is answered once
    assert srv.data_to_send() == b""


def test_server_sends_error_statuses() -> None:
    srv = ServerConnection()
    srv.receive_data(encode_frame(1, MessageType.REQUEST, 0, _request()))
    srv.send_response(1, status=Status(Code.NOT_FOUND, "no such pod"))
    [(_, resp)] = _responses(srv.data_to_send())
    assert (resp.status.code, resp.status.message) == (Code.NOT_FOUND, "no such pod")


@pytest.mark.parametrize(("frames", "code", "text"), [
    ([(2, MessageType.REQUEST, 0, _request())], Code.INVALID_ARGUMENT, "must be odd"),
    ([(3, MessageType.REQUEST, 0, _request()), (1, MessageType.REQUEST, 0, _request())],
     Code.INVALID_ARGUMENT, "must increment"),
    ([(3, MessageType.REQUEST, 0, _request()), (3, MessageType.REQUEST, 0, _request())],
     Code.INVALID_ARGUMENT, "must increment"),
    ([(1, MessageType.REQUEST, 0, b"\xff\xff\xff")], Code.INVALID_ARGUMENT, "unmarshal request"),
    ([(5, MessageType.DATA, 0, b"x")], Code.INVALID_ARGUMENT, "no longer active"),
    ([(1, MessageType.REQUEST, ttrpc.FLAG_REMOTE_OPEN, _request())], Code.UNIMPLEMENTED,
     "streaming"),
])
def test_server_refuses_bad_frames_on_their_stream(
        frames: list[tuple[int, int, int, bytes]], code: Code, text: str) -> None:
    srv = ServerConnection()
    got = srv.receive_data(b"".join(encode_frame(*f) for f in frames))
    answers = _responses(srv.data_to_send())
    assert answers[-1][0] == frames[-1][0]
    assert answers[-1][1].status.code == code and text in answers[-1][1].status.message
    assert len(got) == len(frames) - 1  # only the good first request, if any, came through
    assert srv.errors_sent == 1


def test_data_on_an_active_unary_stream_closes_it() -> None:
    srv = ServerConnection()
    srv.receive_data(encode_frame(1, MessageType.REQUEST, 0, _request()))
    srv.receive_data(encode_frame(1, MessageType.DATA, 0, b"more"))
    [(sid, resp)] = _responses(srv.data_to_send())
    assert sid == 1 and resp.status.code == Code.INVALID_ARGUMENT and "unary" in resp.status.message
    assert srv.active == set()
    assert not srv.send_response(1, b"late")  # the handler's late answer is dropped


def test_remote_closed_flag_on_a_request_is_still_unary() -> None:
    srv = ServerConnection()
    assert len(srv.receive_data(encode_frame(1, MessageType.REQUEST, ttrpc.FLAG_REMOTE_CLOSED,
                                             _request()))) == 1


def test_server_ignores_unknown_types_and_responses() -> None:
    srv = ServerConnection()
    raw = encode_frame(1, 0x7F, 0, b"future") + encode_frame(1, MessageType.RESPONSE, 0, b"") \
        + encode_frame(1, MessageType.REQUEST, 0, _request())
    assert [r.stream_id for r in srv.receive_data(raw)] == [1]
    assert srv.data_to_send() == b""


def test_server_oversized_request_gets_resource_exhausted_and_the_connection_goes_on() -> None:
    srv = ServerConnection(max_length=64)
    big = encode_frame(1, MessageType.REQUEST, 0, b"\0" * 100, max_length=1000)
    got = srv.receive_data(big + encode_frame(3, MessageType.REQUEST, 0, _request()))
    assert [r.stream_id for r in got] == [3]
    [(sid, resp)] = _responses(srv.data_to_send())
    assert sid == 1 and resp.status.code == Code.RESOURCE_EXHAUSTED
    # the skipped request's id counts as used
    srv.receive_data(encode_frame(1, MessageType.REQUEST, 0, _request()))
    assert _responses(srv.data_to_send())[0][1].status.code == Code.INVALID_ARGUMENT


def test_server_bounds_requests_in_flight() -> None:
    srv = ServerConnection(max_active=2)
    raw = b"".join(encode_frame(i, MessageType.REQUEST, 0, _request()) for i in (1, 3, 5))
    assert [r.stream_id for r in srv.receive_data(raw)] == [1, 3]
    [(sid, resp)] = _responses(srv.data_to_send())
    assert sid == 5 and resp.status.code == Code.RESOURCE_EXHAUSTED
    srv.send_response(1)
    assert [r.stream_id for r in srv.receive_data(
        encode_frame(7, MessageType.REQUEST, 0, _request()))] == [7]


def test_server_answer_over_the_limit_becomes_resource_exhausted() -> None:
    srv = ServerConnection(max_length=64)
    srv.receive_data(encode_frame(1, MessageType.REQUEST, 0, _request()))
    assert srv.send_response(1, b"\0" * 100)
    [(_, resp)] = _responses(srv.data_to_send())
    assert resp.status.code == Code.RESOURCE_EXHAUSTED and resp.payload == b""


def test_status_messages_are_bounded() -> None:
    st = Status(Code.UNKNOWN, "x" * 10_000)
    assert len(st.to_proto().message) == ttrpc.MAX_STATUS_MESSAGE
    assert str(Status(Code.NOT_FOUND, "gone")) == "NOT_FOUND: gone"
    assert str(Status(99)) == "code 99"


# ---------------------------------------------------------------- client

def test_client_ids_are_odd_and_increasing() -> None:
    cli = ClientConnection()
    ids = [cli.send_request("s", "m", b"") for _ in range(4)]
    assert ids == [1, 3, 5, 7]
    frames = [f for f in FrameDecoder().feed(cli.data_to_send()) if isinstance(f, Frame)]
    assert [(f.stream_id, f.type, f.flags) for f in frames] == [(i, 1, 0) for i in ids]
    req = ttrpc_pb2.Request()
    req.ParseFromString(frames[0].data)
    assert (req.service, req.method) == ("s", "m")


def test_client_request_carries_timeout_and_metadata() -> None:
    cli = ClientConnection()
    cli.send_request("s", "m", b"x", timeout_ns=2_000_000_000, metadata=[("a", "b")])
    [f] = FrameDecoder().feed(cli.data_to_send())
    assert isinstance(f, Frame)
    req = ttrpc_pb2.Request()
    req.ParseFromString(f.data)
    assert req.timeout_nano == 2_000_000_000 and [(m.key, m.value) for m in req.metadata] == [("a", "b")]


def test_client_refuses_a_request_over_the_limit_without_using_an_id() -> None:
    cli = ClientConnection(max_length=32)
    with pytest.raises(ValueError, match="exceeds"):
        cli.send_request("s", "m", b"\0" * 64)
    assert cli.pending == set() and cli.send_request("s", "m", b"") == 1


def test_client_stream_ids_run_out() -> None:
    cli = ClientConnection()
    cli._next_id = ttrpc.MAX_STREAM_ID  # the last odd id
    assert cli.send_request("s", "m", b"") == ttrpc.MAX_STREAM_ID
    with pytest.raises(ValueError, match="exhausted"):
        cli.send_request("s", "m", b"")


def _resp(sid: int, code: int = 0, payload: bytes = b"", msg: str = "") -> bytes:
    body = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=msg), payload=payload)
    return encode_frame(sid, MessageType.RESPONSE, 0, body.SerializeToString())


def test_client_matches_interleaved_responses_to_their_calls() -> None:
    cli = ClientConnection()
    a, b, c = (cli.send_request("s", "m", b"") for _ in range(3))
    got = cli.receive_data(_resp(c, payload=b"C") + _resp(a, 5, msg="nope") + _resp(b, payload=b"B"))
    assert [(r.stream_id, r.status.code, r.payload) for r in got] == \
        [(c, 0, b"C"), (a, 5, b""), (b, 0, b"B")]
    assert got[1].error() is not None and not got[1].fatal and got[0].error() is None
    assert cli.pending == set()


def test_response_without_status_is_ok() -> None:
    cli = ClientConnection()
    sid = cli.send_request("s", "m", b"")
    body = ttrpc_pb2.Response(payload=b"x").SerializeToString()
    [r] = cli.receive_data(encode_frame(sid, MessageType.RESPONSE, 0, body))
    assert r.status.ok and r.payload == b"x"


def test_client_ignores_what_belongs_to_no_call() -> None:
    cli = ClientConnection()
    sid = cli.send_request("s", "m", b"")
    raw = _resp(sid + 2) + _resp(2) + encode_frame(sid, 0x7F, 0, b"") \
        + encode_frame(sid, MessageType.REQUEST, 0, _request())
    assert cli.receive_data(raw) == []
    assert cli.ignored == 4 and cli.pending == {sid}
    cli.receive_data(_resp(sid))
    assert cli.receive_data(_resp(sid)) == []  # a second answer: ignored
    assert cli.ignored == 5


def test_cancelled_call_ignores_its_late_answer() -> None:
    cli = ClientConnection()
    sid = cli.send_request("s", "m", b"")
    cli.cancel(sid)
    assert cli.receive_data(_resp(sid)) == [] and cli.ignored == 1


@pytest.mark.parametrize(("raw", "code"), [
    (lambda sid: encode_frame(sid, MessageType.RESPONSE, 0, b"\xff\xff"), Code.INTERNAL),
    (lambda sid: encode_frame(sid, MessageType.DATA, 0, b"x"), Code.INTERNAL),
    (lambda sid: struct.pack(">IIBB", 100, sid, 2, 0) + b"\0" * 100, Code.RESOURCE_EXHAUSTED),
])
def test_client_transport_failures_are_fatal(raw: object, code: Code) -> None:
    cli = ClientConnection(max_length=64)
    sid = cli.send_request("s", "m", b"")
    [r] = cli.receive_data(raw(sid))  # type: ignore[operator]
    assert r.status.code == code and r.fatal
    err = r.error()
    assert isinstance(err, RpcError) and err.fatal and err.code == code
    assert cli.pending == set()


def test_connection_lost_fails_every_pending_call() -> None:
    cli = ClientConnection()
    ids = [cli.send_request("s", "m", b"") for _ in range(3)]
    cli.receive_data(_resp(ids[1]))
    lost = cli.connection_lost("eof")
    assert [r.stream_id for r in lost] == [ids[0], ids[2]]
    assert all(r.status.code == Code.UNAVAILABLE and r.fatal for r in lost)
    assert cli.pending == set() and cli.connection_lost() == []


# ---------------------------------------------------------------- client <-> server

def test_client_and_server_talk_through_byte_at_a_time_delivery() -> None:
    cli, srv = ClientConnection(), ServerConnection()
    ids = [cli.send_request("svc", f"M{i}", bytes([i])) for i in range(5)]
    reqs = [r for b in cli.data_to_send() for r in srv.receive_data(bytes([b]))]
    assert [(r.stream_id, r.method, r.payload) for r in reqs] == \
        [(i, f"M{n}", bytes([n])) for n, i in enumerate(ids)]
    for r in reversed(reqs):
        srv.send_response(r.stream_id, r.payload * 2)
    got = [x for b in srv.data_to_send() for x in cli.receive_data(bytes([b]))]
    assert {(r.stream_id, r.payload) for r in got} == {(i, bytes([n, n])) for n, i in enumerate(ids)}


# ---------------------------------------------------------------- routing

def _router() -> Router:
    router = Router()

    def register(req: nri_api_pb2.RegisterPluginRequest) -> nri_api_pb2.Empty:
        if req.plugin_name == "bad":
            raise RpcError(Status(Code.INVALID_ARGUMENT, "bad name"))
        if req.plugin_name == "boom":
            raise RuntimeError("exploded")
        return nri_api_pb2.Empty()

    router.add("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin",
               nri_api_pb2.RegisterPluginRequest, register)
    return router


def _call(router: Router, service: str, method: str, payload: bytes) -> tuple[bytes, Status]:
    return router.dispatch(RequestReceived(1, service, method, payload))


def test_router_dispatches_typed_messages() -> None:
    router = _router()
    svc = "nri.pkg.api.v1alpha1.Runtime"
    ok = nri_api_pb2.RegisterPluginRequest(plugin_name="p", plugin_idx="10").SerializeToString()
    assert _call(router, svc, "RegisterPlugin", ok) == (b"", ttrpc.OK)
    bad = nri_api_pb2.RegisterPluginRequest(plugin_name="bad").SerializeToString()
    assert _call(router, svc, "RegisterPlugin", bad)[1] == Status(Code.INVALID_ARGUMENT, "bad name")
    boom = nri_api_pb2.RegisterPluginRequest(plugin_name="boom").SerializeToString()
    assert _call(router, svc, "RegisterPlugin", boom)[1] == \
        Status(Code.UNKNOWN, "RuntimeError: exploded")
    assert _call(router, svc, "RegisterPlugin", b"\xff")[1].code == Code.INVALID_ARGUMENT
    assert _call(router, svc, "Nope", b"")[1] == Status(Code.UNIMPLEMENTED, "method Nope")
    assert _call(router, "other", "RegisterPlugin", b"")[1] == \
        Status(Code.UNIMPLEMENTED, "service other")
