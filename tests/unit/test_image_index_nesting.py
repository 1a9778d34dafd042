"""Indexes inside indexes: followed up to MAX_INDEX_DEPTH, then an error naming the limit."""
from __future__ import annotations

import hashlib
import json

import pytest

from imageservice.manifest import (
    MAX_INDEX_DEPTH,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    Descriptor,
    follow_index,
    select_platform,
)
from pycri_common.errors import InvalidArgument, NotFound

WANT = ("linux", "amd64", "")
MANIFEST = b'{"schemaVersion": 2}'


def _digest(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def _chain(depth: int) -> tuple[bytes, dict[str, tuple[str, bytes]]]:
    """(top index, blobs by digest) of `depth` nested indexes ending in MANIFEST."""
    blobs = {_digest(MANIFEST): (MT_OCI_MANIFEST, MANIFEST)}
    body, mt = MANIFEST, MT_OCI_MANIFEST
    for _ in range(depth):
        body = json.dumps({"manifests": [{"mediaType": mt, "digest": _digest(body),
                                          "size": len(body),
                                          "platform": {"os": "linux", "architecture": "amd64"}}]
                           }).encode()
        mt = MT_OCI_INDEX
        blobs[_digest(body)] = (mt, body)
    return body, blobs


def _fetch(blobs: dict[str, tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    def fetch(d: Descriptor) -> tuple[str, str, bytes]:
        mt, body = blobs[d.digest]
        return d.digest, mt, body
    return fetch


def test_nested_indexes_within_the_limit_are_followed() -> None:
    for depth in (1, 2, MAX_INDEX_DEPTH):
        top, blobs = _chain(depth)
        digest, body, nested = follow_index(top, _fetch(blobs), WANT)
        assert (digest, body) == (_digest(MANIFEST), MANIFEST)
        assert len(nested) == depth - 1


@pytest.mark.parametrize("depth", [MAX_INDEX_DEPTH + 1, 40])
def test_deeper_nesting_names_the_limit(depth: int) -> None:
    top, blobs = _chain(depth)
    with pytest.raises(InvalidArgument, match=f"deeper than {MAX_INDEX_DEPTH} levels .the limit"):
        follow_index(top, _fetch(blobs), WANT)


def test_entries_of_the_platform_with_unknown_types_are_named() -> None:
    odd = Descriptor("application/x-odd", _digest(b"x"), 1, {"os": "linux", "architecture": "amd64"})
    with pytest.raises(InvalidArgument, match="have unsupported media types: 'application/x-odd'"):
        select_platform([odd], WANT)
    other = Descriptor(MT_OCI_MANIFEST, _digest(b"y"), 1, {"os": "linux", "architecture": "arm64"})
    with pytest.raises(NotFound, match=r"\(it has: linux/arm64\)"):
        select_platform([other], WANT)
