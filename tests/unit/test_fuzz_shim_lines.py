"""Fuzzing the shim's JSON lines and frames: request lines on the control socket
(runtime.shim.control), attach frames (runtime.shim.frames), the daemon's reading of replies
(runtime.shim_client) and the report lines of a container's init (take_report_messages).

Properties: the control connection answers every request line with one JSON reply, hands the
handler only JSON objects, and never lets an exception out of its read callback (that would
end the shim's loop, and with it every container of the pod); the frame decoder yields frames
of known streams with bounded payloads or raises FrameError, refusing a too-long length at
once instead of buffering for it; the client returns a reply object or raises a PycriError;
the report parser returns only objects. Seeds are the lines the daemon and the init write.
"""
from __future__ import annotations

import json
import socket
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from pycri_common.errors import NotFound, PycriError
from runtime.shim import control, frames
from runtime.shim.loop import Loop
from runtime.shim.reports import take_report_messages
from runtime.shim_client import ShimClient
from tests.support.fuzz import chunked, fuzz_settings, mutated

_DEEP = b"[" * 100_000

REQUESTS = [
    b'{"op": "hello"}\n',
    (b'{"op": "create", "container_id": "5f1c", "spec": {"process": {"args": ["sh", "-c", "echo hi"],'
    b' "env": ["PATH=/bin"], "cwd": "/"}, "root": {"path": "/run/pycri/rootfs/5f1c"},'
    b' "log_path": "/var/log/pods/p/c/0.log"}}\n'),
    b'{"op": "wait", "container_id": "5f1c", "timeout": 10.0}\n{"op": "state"}\n',
    b'{"op": "kill", "container_id": "5f1c", "signal": 15}\n\n{"op": "delete", "container_id": "5f1c"}\n',
    b'{"op": "attach", "container_id": "5f1c"}\n' + frames.encode(frames.STDIN, b"ls\n")
    + frames.encode(frames.RESIZE, b'{"width": 80, "height": 24}') + frames.encode(frames.STDIN_CLOSE),
]


def _serve(data_chunks: list[bytes]) -> tuple[list[dict[str, Any]], list[tuple[int, bytes]], bytes]:
    """Feed the chunks to a control connection; (requests handled, frames, reply bytes)."""
    loop = Loop()
    shim_end, daemon_end = socket.socketpair()
    shim_end.setblocking(False)
    daemon_end.settimeout(5)
    handled: list[dict[str, Any]] = []
    got_frames: list[tuple[int, bytes]] = []

    def on_frame(conn: control.Connection, stream: int, payload: bytes) -> None:
        got_frames.append((stream, payload))

    def handle(conn: control.Connection, req: dict[str, Any], fds: list[int]) -> dict[str, Any] | None:
        assert isinstance(req, dict) and fds == []
        handled.append(req)
        op = req.get("op")
        if op == "attach":
            conn.reply({})
            conn.enter_attach_mode(on_frame)
            return None
        if op == "kill":
            raise NotFound("no such container")
        if op == "delete":
            raise KeyError("a handler's bug")
        return {"echo": op}

    closed: list[control.Connection] = []
    conn = control.Connection(loop, shim_end, handle, closed.append)
    replies = b""
    try:
        for chunk in data_chunks:
            if conn.closed:  # it gave up on this client (a bad frame, a line too long)
                break
            daemon_end.sendall(chunk)
            while not conn.closed:
                before = conn.pending, len(handled), len(got_frames)
                conn._on_readable()
                if (conn.pending, len(handled), len(got_frames)) == before:
                    break
        if not conn.closed:
            daemon_end.shutdown(socket.SHUT_WR)
        while not conn.closed:
            conn._on_readable()
        while chunk := daemon_end.recv(1 << 20):
            replies += chunk
    finally:
        conn.close()
        daemon_end.close()
        loop._sel.close()
    return handled, got_frames, replies


@fuzz_settings(300)
@given(mutated(REQUESTS), st.lists(st.integers(0, 1 << 16), max_size=4))
@example(REQUESTS[1], [])
@example(REQUESTS[4], [50])
@example(_DEEP + b"\n", [])                       # nested deeper than json.loads can recurse
@example(b'"not an object"\n[1]\n\xff\xfe\n', [])
def test_control_lines_get_one_reply_each(data: bytes, cuts: list[int]) -> None:
    handled, got_frames, replies = _serve(chunked(data, cuts))
    for line in replies.splitlines():
        reply = json.loads(line)
        assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
    for stream, payload in got_frames:
        assert stream in frames.KNOWN_STREAMS and len(payload) <= frames.MAX_PAYLOAD


@fuzz_settings(300)
@given(mutated([REQUESTS[4][REQUESTS[4].index(b"\n") + 1:],
                frames.encode(frames.STDOUT, b"hi\n") + frames.encode(frames.EXITED, json.dumps(
                    {"state": "exited", "exit_code": 0, "finished_at": 1733140000123456789}).encode())]),
       st.lists(st.integers(0, 1 << 16), max_size=4))
@example(b"\x01\xff\xff\xff\xff", [])              # claims a 4 GiB payload
@example(b"\x09\x00\x00\x00\x00", [])              # unknown stream
def test_frame_decoder_yields_frames_or_frame_error(data: bytes, cuts: list[int]) -> None:
    decoder = frames.FrameDecoder()
    try:
        for chunk in chunked(data, cuts):
            for stream, payload in decoder.feed(chunk):
                assert stream in frames.KNOWN_STREAMS and len(payload) <= frames.MAX_PAYLOAD
            assert decoder.pending < frames.HEADER_SIZE + frames.MAX_PAYLOAD
    except frames.FrameError:
        pass


REPLIES = [
    (b'{"ok": true, "pod_id": "p1", "shim_pid": 4242, "pause_pid": 4243, "pause_alive": true,'
    b' "ns": {"net": "/run/netns/p1"}, "containers": []}\n'),
    b'{"ok": false, "kind": "NotFound", "error": "container 5f1c not found"}\n',
    b'{"ok": true}\n' + frames.encode(frames.STDOUT, b"hi"),
]


@fuzz_settings(300)
@given(mutated(REPLIES))
@example(REPLIES[0])
@example(REPLIES[1])
@example(b'{"ok": false, "kind": "__class__", "error": null}\n')
@example(b"[]\n")
@example(b"not json\n")
@example(_DEEP + b"\n")
def test_client_reads_a_reply_or_raises_a_pycri_error(reply: bytes) -> None:
    client = ShimClient("/nonexistent-shim-dir", timeout=5)
    ours, shim = socket.socketpair()
    try:
        shim.sendall(reply)
        shim.shutdown(socket.SHUT_WR)
        ours.settimeout(5)
        try:
            obj, rest = client._roundtrip(ours, {"op": "hello"}, None, 5)
        except PycriError:
            return
        assert isinstance(obj, dict) and "ok" not in obj
        assert reply.endswith(rest)
    finally:
        ours.close()
        shim.close()


REPORTS = [b'{"pid": 4301}\n', b'{"ready": true, "user": {"uid": 0, "gid": 0, "groups": [0, 10]}}\n',
           b'{"error": "exec: \\"nosuch\\": executable file not found in $PATH", "kind": "NotFound"}\n']


@fuzz_settings(200)
@given(mutated([b"".join(REPORTS), REPORTS[0] + b'{"pid": 43'], 6))
@example(_DEEP + b"\n")
def test_report_lines_give_objects_and_keep_the_incomplete_rest(data: bytes) -> None:
    msgs, rest = take_report_messages(data)
    assert all(isinstance(m, dict) for m in msgs)
    assert b"\n" not in rest and data.endswith(rest)
