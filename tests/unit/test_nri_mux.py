"""nri.mux: NRI's trunk framing (connection id + length), splitting, demultiplexing, errors."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri import mux, ttrpc
from nri.mux import Demux, MuxError, encode
from tests.support.fuzz import fuzz_settings


def test_connection_ids_are_upstreams() -> None:
    # containerd/nri pkg/net/multiplex: PluginServiceConn = 1, RuntimeServiceConn = 2, 0 reserved.
    assert (mux.RESERVED_CONN, mux.PLUGIN_SERVICE_CONN, mux.RUNTIME_SERVICE_CONN) == (0, 1, 2)
    assert mux.MAX_PAYLOAD == ttrpc.HEADER_LENGTH + ttrpc.MAX_MESSAGE_LENGTH


def test_frame_layout_is_big_endian_conn_then_length() -> None:
    assert encode(2, b"abc") == b"\x00\x00\x00\x02\x00\x00\x00\x03abc"
    assert encode(1, b"") == b"\x00\x00\x00\x01\x00\x00\x00\x00"


def test_long_writes_are_split_at_the_maximum_payload() -> None:
    raw = encode(1, b"x" * 10, max_payload=4)
    assert raw == b"".join(struct.pack(">II", 1, n) + b"x" * n for n in (4, 4, 2))
    whole = encode(1, b"y" * (mux.MAX_PAYLOAD + 1))
    assert struct.unpack_from(">II", whole) == (1, mux.MAX_PAYLOAD)
    assert struct.unpack_from(">II", whole, 8 + mux.MAX_PAYLOAD) == (1, 1)


@pytest.mark.parametrize("conn", [0, -1, 2**32])
def test_encode_refuses_reserved_and_out_of_range_ids(conn: int) -> None:
    with pytest.raises(ValueError):
        encode(conn, b"x")


def test_encode_refuses_a_non_positive_maximum() -> None:
    with pytest.raises(ValueError):
        encode(1, b"x", max_payload=0)


def test_demux_refuses_to_open_the_reserved_id() -> None:
    with pytest.raises(ValueError):
        Demux([0, 1])


def test_demux_routes_interleaved_frames() -> None:
    d = Demux([1, 2])
    raw = encode(1, b"a") + encode(2, b"bb") + encode(1, b"c") + encode(1, b"d")
    assert d.feed(raw) == [(1, b"a"), (2, b"bb"), (1, b"cd")]


def test_demux_byte_at_a_time_hands_payload_up_as_it_comes() -> None:
    d = Demux([1, 2])
    raw = encode(1, b"hello") + encode(2, b"") + encode(2, b"w")
    got = [x for b in raw for x in d.feed(bytes([b]))]
    assert b"".join(c for i, c in got if i == 1) == b"hello"
    assert b"".join(c for i, c in got if i == 2) == b"w"
    assert not d.mid_frame


def test_demux_drops_payload_for_unopened_connections() -> None:
    d = Demux([1])
    assert d.feed(encode(7, b"xyz") + encode(2, b"q") + encode(1, b"ok")) == [(1, b"ok")]
    assert d.dropped_bytes == 4


def test_demux_knows_when_the_trunk_ended_mid_frame() -> None:
    d = Demux([1])
    d.feed(encode(1, b"abc")[:5])
    assert d.mid_frame
    d.feed(encode(1, b"abc")[5:9])
    assert d.mid_frame
    d.feed(b"bc")
    assert not d.mid_frame


def test_an_oversized_trunk_frame_is_terminal() -> None:
    d = Demux([1], max_payload=8)
    assert d.feed(encode(1, b"12345678", max_payload=8)) == [(1, b"12345678")]
    with pytest.raises(MuxError, match="exceeds the maximum"):
        d.feed(struct.pack(">II", 1, 9))
    with pytest.raises(MuxError):  # and stays so
        d.feed(encode(1, b"x"))


def test_ttrpc_over_the_mux_both_directions() -> None:
    """The runtime's view: it calls the plugin on conn 1 and serves RegisterPlugin on conn 2."""
    runtime_client, runtime_server = ttrpc.ClientConnection(), ttrpc.ServerConnection()
    plugin_client, plugin_server = ttrpc.ClientConnection(), ttrpc.ServerConnection()
    runtime_demux = Demux([mux.PLUGIN_SERVICE_CONN, mux.RUNTIME_SERVICE_CONN])
    plugin_demux = Demux([mux.PLUGIN_SERVICE_CONN, mux.RUNTIME_SERVICE_CONN])

    plugin_client.send_request("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", b"reg")
    to_runtime = encode(mux.RUNTIME_SERVICE_CONN, plugin_client.data_to_send())
    runtime_client.send_request("nri.pkg.api.v1alpha1.Plugin", "Configure", b"cfg")
    to_plugin = encode(mux.PLUGIN_SERVICE_CONN, runtime_client.data_to_send())

    [(conn, data)] = runtime_demux.feed(to_runtime)
    assert conn == mux.RUNTIME_SERVICE_CONN
    [reg] = runtime_server.receive_data(data)
    assert (reg.method, reg.payload) == ("RegisterPlugin", b"reg")
    [(conn, data)] = plugin_demux.feed(to_plugin)
    assert conn == mux.PLUGIN_SERVICE_CONN
    [cfg] = plugin_server.receive_data(data)
    assert cfg.method == "Configure"

    runtime_server.send_response(reg.stream_id, b"")
    plugin_server.send_response(cfg.stream_id, b"events")
    back_to_plugin = encode(mux.RUNTIME_SERVICE_CONN, runtime_server.data_to_send())
    back_to_runtime = encode(mux.PLUGIN_SERVICE_CONN, plugin_server.data_to_send())
    [(_, data)] = plugin_demux.feed(back_to_plugin)
    assert plugin_client.receive_data(data)[0].status.ok
    [(_, data)] = runtime_demux.feed(back_to_runtime)
    assert runtime_client.receive_data(data)[0].payload == b"events"


class _GoPeer:
    """How a Go NRI peer reads one logical connection: containerd/nri's mux hands each trunk
    frame to one Read (ENOMEM when the caller's buffer is smaller), and ttrpc reads through a
    4096-byte bufio.Reader (one underlying Read per bufio Read; reads of at least its size go
    straight to the caller's buffer when it is empty)."""

    def __init__(self, trunk: bytes) -> None:
        self.messages = [chunk for _, chunk in _frames(trunk)]
        self.buf = b""

    def _mux_read(self, cap: int) -> bytes:
        msg = self.messages.pop(0)
        if len(msg) > cap:
            raise OSError("ENOMEM: trunk frame larger than the read buffer")
        return msg

    def _bufio_read(self, n: int) -> bytes:
        if not self.buf:
            if n >= mux.GO_READ_BUFFER:
                return self._mux_read(n)
            self.buf = self._mux_read(mux.GO_READ_BUFFER)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _read_full(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += self._bufio_read(n - len(out))
        return out

    def recv(self) -> bytes:
        header = self._read_full(ttrpc.HEADER_LENGTH)
        (length,) = struct.unpack_from(">I", header)
        return header + self._read_full(length)


def _frames(trunk: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(trunk):
        conn, n = struct.unpack_from(">II", trunk, pos)
        out.append((conn, trunk[pos + 8:pos + 8 + n]))
        pos += 8 + n
    return out


def _message(n: int, sid: int = 1) -> bytes:
    return ttrpc.encode_frame(sid, ttrpc.MessageType.REQUEST, 0, bytes(n))


@given(st.lists(st.integers(0, 20_000), min_size=1, max_size=6))
@fuzz_settings(100)
def test_a_go_peer_can_read_every_message_we_write(sizes: list[int]) -> None:
    messages = [_message(n, 2 * i + 1) for i, n in enumerate(sizes)]
    trunk = b"".join(mux.encode_message(1, m) for m in messages)
    assert all(len(chunk) <= mux.GO_READ_BUFFER for _, chunk in _frames(trunk))
    peer = _GoPeer(trunk)
    assert [peer.recv() for _ in messages] == messages
    assert peer.messages == []


def test_one_trunk_frame_per_message_stalls_a_go_peer() -> None:
    """What pycri first did: a Synchronize over 4 KiB never reached critest's plugin."""
    peer = _GoPeer(encode(1, _message(5000)))
    with pytest.raises(OSError, match="ENOMEM"):
        peer.recv()
