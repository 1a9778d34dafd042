"""proto/nri_api.proto and proto/ttrpc.proto declare what upstream NRI and ttrpc declare.

NRI's schema is a fact of the protocol: a plugin built against containerd/nri talks to
pycri only if every message, field number and type is the same. The declarations (comments
and blank lines dropped) are compared with a fingerprint of upstream's, and, where an
upstream copy is present next to the checkout (as for the CRI schema), with that file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from google.protobuf import descriptor

from proto import generate, nri_api_pb2, ttrpc_pb2
from tests.unit.test_proto_stubs import _shape

# sha256 of the declaration lines (tests/unit/test_proto_stubs.py:_shape, joined by "\n") of
# containerd/nri pkg/api/api.proto at commit 8ec8b28 (v0.12 plus the container Image message).
UPSTREAM_NRI_SHAPE_SHA256 = "d8b94771896059ed7448584ffb0dcb63f34727a91ecc92459200cffdfc217780"
REFERENCE = Path(os.environ.get(
    "PYCRI_NRI_REFERENCE_PROTO",
    Path(__file__).resolve().parents[3] / "shared/reference/nri/api.proto"))


def _ours() -> str:
    return (generate.PROTO_DIR / "nri_api.proto").read_text()


def test_declarations_match_the_upstream_fingerprint() -> None:
    digest = hashlib.sha256("\n".join(_shape(_ours())).encode()).hexdigest()
    assert digest == UPSTREAM_NRI_SHAPE_SHA256, \
        "proto/nri_api.proto no longer declares what containerd/nri 8ec8b28 declares"


def test_declarations_match_an_upstream_copy() -> None:
    if not REFERENCE.exists():
        pytest.skip(f"no upstream NRI api.proto at {REFERENCE} (set PYCRI_NRI_REFERENCE_PROTO); "
                    "the fingerprint test covers the same declarations")
    assert _shape(_ours()) == _shape(REFERENCE.read_text())


def test_the_fingerprint_notices_a_renumbered_field() -> None:
    changed = _ours().replace("string plugin_idx = 2;", "string plugin_idx = 4;")
    assert changed != _ours()
    digest = hashlib.sha256("\n".join(_shape(changed)).encode()).hexdigest()
    assert digest != UPSTREAM_NRI_SHAPE_SHA256


def _methods(name: str) -> list[str]:
    return [m.name for m in nri_api_pb2.DESCRIPTOR.services_by_name[name].methods]


def test_services_and_package() -> None:
    assert nri_api_pb2.DESCRIPTOR.package == "nri.pkg.api.v1alpha1"
    assert _methods("Runtime") == ["RegisterPlugin", "UpdateContainers"]
    plugin = _methods("Plugin")
    assert len(plugin) == 18
    assert plugin[:3] == ["Configure", "Synchronize", "Shutdown"]
    assert "StateChange" in plugin and "ValidateContainerAdjustment" in plugin


def test_event_numbers_are_the_subscription_bits() -> None:
    ev = nri_api_pb2.Event
    assert [ev.Value(n) for n in ("RUN_POD_SANDBOX", "CREATE_CONTAINER", "REMOVE_CONTAINER",
                                  "UPDATE_POD_SANDBOX", "VALIDATE_CONTAINER_ADJUSTMENT", "LAST")] == \
        [1, 4, 11, 12, 14, 15]


def _fields(msg: descriptor.Descriptor) -> dict[str, tuple[int, int]]:
    return {f.name: (f.number, f.type) for f in msg.fields}


def test_ttrpc_envelopes_match_upstream_numbers() -> None:
    fd = descriptor.FieldDescriptor
    assert ttrpc_pb2.DESCRIPTOR.package == "ttrpc"
    assert _fields(ttrpc_pb2.Request.DESCRIPTOR) == {
        "service": (1, fd.TYPE_STRING), "method": (2, fd.TYPE_STRING),
        "payload": (3, fd.TYPE_BYTES), "timeout_nano": (4, fd.TYPE_INT64),
        "metadata": (5, fd.TYPE_MESSAGE)}
    assert _fields(ttrpc_pb2.Response.DESCRIPTOR) == {
        "status": (1, fd.TYPE_MESSAGE), "payload": (2, fd.TYPE_BYTES)}
    assert _fields(ttrpc_pb2.KeyValue.DESCRIPTOR) == {
        "key": (1, fd.TYPE_STRING), "value": (2, fd.TYPE_STRING)}
    # google.rpc.Status: code = 1 (int32), message = 2, details = 3 (repeated Any).
    assert _fields(ttrpc_pb2.Status.DESCRIPTOR) == {
        "code": (1, fd.TYPE_INT32), "message": (2, fd.TYPE_STRING), "details": (3, fd.TYPE_MESSAGE)}
    assert ttrpc_pb2.Status.DESCRIPTOR.fields_by_name["details"].message_type.full_name == \
        "google.protobuf.Any"


def test_status_bytes_are_google_rpc_status_bytes() -> None:
    # code 5 (NOT_FOUND), message "x": tag 1 varint 5, tag 2 length 1 "x".
    assert ttrpc_pb2.Status(code=5, message="x").SerializeToString() == b"\x08\x05\x12\x01x"
