"""Fuzz: layer tarballs (imageservice.unpack) unpack or raise a PycriError, and nothing is ever
created or changed outside the destination directory."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from imageservice.unpack import unpack_layer
from pycri_common.errors import PycriError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking keeps owners and devices")

_COMPONENTS = ["a", "b", "etc", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh..", "x" * 300,
               "sub/dir", "\x00", "é"]
_NAMES = st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=4).map("/".join) | st.sampled_from(
    ["/etc/passwd", "../../outside", "a/../../outside", "./a", "a/"])
_TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
          tarfile.FIFOTYPE, tarfile.BLKTYPE, b"7", b"x"]
_LINKS = st.sampled_from(["a", "b", "/", "/etc", "..", "../..", "a/b", "../outside", "", "etc/x"])


@st.composite
def _entry(draw: st.DrawFn) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(draw(_NAMES))
    ti.type = draw(st.sampled_from(_TYPES))
    ti.mode = draw(st.integers(0, 0o7777))
    ti.uid = draw(st.sampled_from([0, 1000, 65534, 2**21 - 1]))
    ti.gid = draw(st.sampled_from([0, 33, 2**21 - 1]))
    ti.mtime = draw(st.sampled_from([0, 1_700_000_000, 2**33 - 1]))
    if ti.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        ti.linkname = draw(_LINKS)
    if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        ti.devmajor, ti.devminor = draw(st.sampled_from([(0, 0), (1, 3), (4095, 255)]))
    data = draw(st.binary(max_size=32)) if ti.type == tarfile.REGTYPE else b""
    ti.size = len(data)
    if draw(st.booleans()):
        ti.pax_headers = {draw(st.sampled_from(
            ["SCHILY.xattr.user.k", "SCHILY.xattr.trusted.overlay.opaque",
             "SCHILY.xattr.security.capability", "SCHILY.xattr.", "path", "linkpath"])):
            draw(st.sampled_from(["y", "", "a/b", "../x", "\x00"]))}
    return ti, data


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            try:
                tf.addfile(ti, io.BytesIO(data))
            except (ValueError, UnicodeError):   # tarfile cannot even write it
                continue
    return buf.getvalue()


_LAYERS = st.one_of(
    st.lists(_entry(), min_size=1, max_size=6).map(_tar),
    st.lists(_entry(), min_size=1, max_size=4).map(lambda es: gzip.compress(_tar(es), mtime=0)),
    st.binary(max_size=600),
    st.lists(_entry(), min_size=1, max_size=4).map(lambda es: _tar(es)[:700]),   # truncated
)


def _snapshot(top: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.lstat().st_mode, p.lstat().st_mtime_ns) for p in top.rglob("*"))


def _sample_layer() -> bytes:
    ok = []
    for name, kind, link in [("etc", tarfile.DIRTYPE, ""), ("etc/motd", tarfile.REGTYPE, ""),
                             ("bin", tarfile.DIRTYPE, ""), ("bin/sh", tarfile.SYMTYPE, "busybox"),
                             ("etc/hard", tarfile.LNKTYPE, "etc/motd"),
                             ("etc/.wh.old", tarfile.REGTYPE, ""),
                             ("var/.wh..wh..opq", tarfile.REGTYPE, "")]:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode = kind, link, 0o755
        ok.append((ti, b""))
    return _tar(ok)


def _escape_layer() -> bytes:
    link = tarfile.TarInfo("x")
    link.type, link.linkname = tarfile.SYMTYPE, "../outside"
    through = tarfile.TarInfo("x/owned")
    return _tar([(link, b""), (through, b"")])


def _xattr_on_fifo_layer() -> bytes:
    """Found by this fuzzer: user.* xattrs are EPERM on a FIFO (was a PermissionError)."""
    ti = tarfile.TarInfo("a")
    ti.type = tarfile.FIFOTYPE
    ti.pax_headers = {"SCHILY.xattr.user.k": "y"}
    return _tar([(ti, b"")])


def _empty_symlink_layer() -> bytes:
    """Found by this fuzzer: a symlink with an empty target (was a FileNotFoundError)."""
    ti = tarfile.TarInfo("a")
    ti.type = tarfile.SYMTYPE
    return _tar([(ti, b"")])


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_LAYERS)
@example(_sample_layer())
@example(_escape_layer())
@example(_xattr_on_fifo_layer())
@example(_empty_symlink_layer())
@example(b"")
@example(gzip.compress(b"not a tar", mtime=0))
@example(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)    # zstd magic, garbage frame
def test_unpack(layer: bytes) -> None:
    box = Path(tempfile.mkdtemp(prefix="pycri-fuzz-unpack-"))
    try:
        dest = box / "dest"
        dest.mkdir()
        (box / "outside").mkdir()
        (box / "outside" / "keep").write_text("keep")
        before = _snapshot(box / "outside")
        try:
            unpack_layer(io.BytesIO(layer), dest, layer="sha256:" + "f" * 64)
        except PycriError:
            pass
        assert sorted(os.listdir(box)) == ["dest", "outside"]
        assert _snapshot(box / "outside") == before
    finally:
        shutil.rmtree(box)


def test_user_xattr_on_a_fifo_is_skipped(tmp_path: Path) -> None:
    unpack_layer(io.BytesIO(_xattr_on_fifo_layer()), tmp_path)
    assert (tmp_path / "a").is_fifo()
