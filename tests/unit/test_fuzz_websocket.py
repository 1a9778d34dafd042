"""Fuzzing the WebSocket frames the streaming server reads (cri_server.streaming.websocket and
the SPDY tunnel of cri_server.streaming.ws_tunnel).

Whatever a client sends after the upgrade, the reader delivers channel data or ends the
connection (a close frame or, for wsproto's ProtocolError, a 1002 close): no other exception
escapes the reader, and it always stops at the end of the input. Seeds are the masked client
frames kubectl/crictl send: v5.channel.k8s.io stdin and resize messages, the v5 close signal,
base64 text messages, ping and close; binary SPDY chunks for the port-forward tunnel.
"""
from __future__ import annotations

import socket

from hypothesis import example, given
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from cri_server.streaming import k8s_protocols as kp
from cri_server.streaming.websocket import WsChannelConnection
from cri_server.streaming.ws_tunnel import WsTunnelSocket
from tests.support.fuzz import fuzz_settings, mutated


def _client_frames(*events: object) -> bytes:
    ws = Connection(ConnectionType.CLIENT)
    return b"".join(ws.send(e) for e in events)  # type: ignore[arg-type]


EXEC_V5 = _client_frames(BytesMessage(data=b"\x00echo hi\n"),
                         BytesMessage(data=b'\x04{"Width":80,"Height":24}'),
                         BytesMessage(data=b"\xff\x00"), Ping(payload=b"k"),
                         CloseConnection(code=1000))
EXEC_BASE64 = _client_frames(TextMessage(data="0ZWNobyBoaQo="), TextMessage(data="4e30="),
                             CloseConnection(code=1000, reason="bye"))
FRAGMENTED = _client_frames(BytesMessage(data=b"\x00ab", message_finished=False),
                            BytesMessage(data=b"cd", message_finished=True))
TUNNEL = _client_frames(BytesMessage(data=b"\x80\x03\x00\x01\x00\x00\x00\x0a"),
                        BytesMessage(data=b"\x00" * 10), CloseConnection(code=1000))
SAMPLES = [EXEC_V5, EXEC_BASE64, FRAGMENTED, TUNNEL]


def _pair(data: bytes, split: int) -> tuple[socket.socket, socket.socket, bytes]:
    """(server end, client end, trailing bytes): data[:split] came with the upgrade request,
    the rest is already on the socket, whose client end is shut for writing."""
    split %= len(data) + 1
    server, client = socket.socketpair()
    client.sendall(data[split:])
    client.shutdown(socket.SHUT_WR)
    return server, client, data[:split]


@fuzz_settings(250)
@given(mutated(SAMPLES), st.integers(0, 1 << 16),
       st.sampled_from([kp.V5, kp.V4, kp.V4_BASE64, kp.BASE64, kp.V1]))
@example(EXEC_V5, 0, kp.V5)
@example(EXEC_BASE64, 3, kp.V4_BASE64)
@example(b"\x82\xff" + b"\x7f" * 8 + b"\0" * 4, 0, kp.V5)          # claims a 2^63-byte frame
@example(b"\x81\x85abcd" + bytes(b ^ m for b, m in zip(b"0\xff\xfe\xfd\xfc", b"abcd" * 2,
                                                         strict=False)), 0, kp.BASE64)
def test_channel_reader_delivers_or_closes(data: bytes, split: int, protocol: str) -> None:
    server, client, trailing = _pair(data, split)
    conn = WsChannelConnection(server, protocol, trailing_data=trailing)
    try:
        conn._read_loop()   # the reader thread's body, run here so its exceptions fail the test
        assert conn.closed and conn.done.is_set()
        for channel in range(6):
            while conn.read(channel, timeout=0):
                pass
    finally:
        server.close()
        client.close()


@fuzz_settings(150)
@given(mutated(SAMPLES), st.integers(0, 1 << 16))
@example(TUNNEL, 0)
@example(TUNNEL, 5)
def test_tunnel_reads_bytes_until_eof(data: bytes, split: int) -> None:
    server, client, trailing = _pair(data, split)
    tunnel = WsTunnelSocket(server, trailing)
    try:
        received = 0
        while chunk := tunnel.recv(65536):
            received += len(chunk)
        assert received <= len(data)
    finally:
        tunnel.close()
        client.close()
