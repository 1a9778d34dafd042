"""Layer unpacking as root: metadata kept, the breakout table refused, full disks survived."""
from __future__ import annotations

import io
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imageservice.unpack import unpack_layer
from pycri_common.errors import InvalidArgument
from tests.support import oci_build as ob
from tests.support.cri_client import rpc_error
from tests.support.image_harness import ImageServiceHarness
from tests.support.registry import Registry, registry_available

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")
pytestmark = needs_root


@pytest.fixture
def sandbox() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pycri-unpack-") as d:
        base = Path(d)
        (base / "root").mkdir()
        (base / "outside").mkdir()
        (base / "outside" / "secret").write_text("secret\n")
        yield base


def _snapshot_outside(base: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for p in sorted(base.rglob("*")):
        if base / "root" in p.parents or p == base / "root":
            continue
        st = os.lstat(p)
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        out[str(p)] = (st.st_mode, st.st_nlink, data)
    return out


def _unpack(base: Path, entries: list[ob.Entry], compression: str = "gzip") -> None:
    layer = ob.Layer.from_tar(ob.tar_bytes(entries, add_parents=False), compression)
    unpack_layer(io.BytesIO(layer.blob), base / "root", layer="test")


def _outside(base: Path) -> str:
    return str(base / "outside")


BREAKOUTS = {
    "absolute symlink written through": lambda o: [
        ob.Symlink("evil", o), ob.File("evil/pwned", "x")],
    "symlink up and out": lambda o: [ob.Symlink("evil", "../outside"), ob.File("evil/pwned", "x")],
    "nested symlink up and out": lambda o: [
        ob.Dir("x"), ob.Symlink("x/up", "../.."), ob.File("x/up/outside/pwned", "x")],
    "symlink chain": lambda o: [
        ob.Symlink("b", o), ob.Symlink("a", "b"), ob.File("a/pwned", "x")],
    "hard link up and out": lambda o: [ob.Hardlink("h", "../outside/secret")],
    "hard link absolute": lambda o: [ob.Hardlink("h", o + "/secret")],
    "hard link through a symlink": lambda o: [
        ob.Symlink("s", o), ob.Hardlink("h", "s/secret")],
    "hard link to a directory": lambda o: [ob.Dir("d"), ob.Hardlink("h", "d")],
    "directory replaced by a symlink, then written through": lambda o: [
        ob.Dir("d"), ob.File("d/ok", "ok"), ob.Symlink("d", o), ob.File("d/pwned", "x")],
    "whiteout of the parent": lambda o: [ob.File(".wh..", "")],
    "whiteout of the parent in a subdir": lambda o: [ob.Dir("a"), ob.File("a/.wh..", "")],
    "dot-dot entry": lambda o: [ob.File("../outside/pwned", "x")],
    "dot-dot in the middle": lambda o: [ob.Dir("a"), ob.File("a/../../outside/pwned", "x")],
    "dot-dot directory": lambda o: [ob.Dir("..")],
    "absolute path": lambda o: [ob.File(o + "/pwned", "x")],
    "device node through a symlink": lambda o: [
        ob.Symlink("evil", o), ob.Device("evil/null", "char", 1, 3)],
    "block device up and out": lambda o: [ob.Device("../outside/sda", "block", 8, 0)],
    "fifo through a symlink": lambda o: [ob.Symlink("evil", o), ob.Device("evil/fifo", "fifo")],
    "symlink entry up and out then hardlink through": lambda o: [
        ob.Symlink("evil", "../outside"), ob.Hardlink("evil/h", "etc")],
    "overlay xattr smuggled in": lambda o: [
        ob.Entry("d", "dir", mode=0o755, xattrs={"trusted.overlay.redirect": b"/etc"})],
}


@pytest.mark.parametrize("case", sorted(BREAKOUTS))
def test_breakout_is_refused_and_nothing_is_written_outside(sandbox, case):
    before = _snapshot_outside(sandbox)
    with pytest.raises(InvalidArgument) as exc:
        _unpack(sandbox, BREAKOUTS[case](_outside(sandbox)))
    assert "refus" in str(exc.value) or "'..'" in str(exc.value) or "absolute" in str(exc.value) \
        or "whiteout" in str(exc.value) or "overlay" in str(exc.value) \
        or "directory" in str(exc.value) or "not in this layer" in str(exc.value)
    assert _snapshot_outside(sandbox) == before
    assert sorted(os.listdir(sandbox)) == ["outside", "root"]


def test_metadata_is_kept(sandbox):
    entries = [
        ob.Dir("bin", mode=0o755, mtime=1_600_000_000),
        ob.File("bin/suid", b"#!x", mode=0o4755, uid=0, gid=0),
        ob.File("bin/sgid", b"#!x", mode=0o2711, uid=1000, gid=33),
        ob.Dir("tmp", mode=0o1777),
        ob.File("home/u/f", "f", uid=1000, gid=1000, mode=0o600, mtime=1_500_000_000,
                xattrs={"user.pycri": b"yes"}),
        ob.Hardlink("home/u/g", "home/u/f"),
        ob.Symlink("abs", "/etc/passwd", uid=1000, gid=1000),
        ob.Symlink("rel", "bin/suid"),
        ob.Device("dev/null", "char", 1, 3, mode=0o666),
        ob.Device("dev/loop9", "block", 7, 9, mode=0o660, gid=6),
        ob.Device("run/fifo", "fifo", mode=0o620),
        ob.File("etc/old", "old"), ob.Dir("etc/old"),          # a file replaced by a dir
        ob.Dir("opt"), ob.File("opt/.wh..wh..opq", ""), ob.File("opt/new", "n"),
        ob.File(".wh.gone", ""),
        ob.Entry("./", "dir", mode=0o755),
    ]
    _unpack(sandbox, ob.parent_dirs(entries) + entries, compression="zstd")
    r = sandbox / "root"
    assert stat.S_IMODE(os.lstat(r / "bin/suid").st_mode) == 0o4755
    st = os.lstat(r / "bin/sgid")
    assert stat.S_IMODE(st.st_mode) == 0o2711 and (st.st_uid, st.st_gid) == (1000, 33)
    assert stat.S_IMODE(os.lstat(r / "tmp").st_mode) == 0o1777
    st = os.lstat(r / "home/u/f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), int(st.st_mtime)) == (
        1000, 1000, 0o600, 1_500_000_000)
    assert st.st_nlink == 2 and os.lstat(r / "home/u/g").st_ino == st.st_ino
    assert os.getxattr(r / "home/u/f", "user.pycri") == b"yes"
    assert os.readlink(r / "abs") == "/etc/passwd"
    assert os.lstat(r / "abs").st_uid == 1000
    st = os.lstat(r / "dev/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = os.lstat(r / "dev/loop9")
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(7, 9) and st.st_gid == 6
    assert stat.S_ISFIFO(os.lstat(r / "run/fifo").st_mode)
    assert (r / "etc/old").is_dir()
    assert os.getxattr(r / "opt", "trusted.overlay.opaque") == b"y"
    assert (r / "opt/new").read_text() == "n" and not (r / "opt/.wh..wh..opq").exists()
    st = os.lstat(r / "gone")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert int(os.lstat(r / "bin").st_mtime) == 1_600_000_000


def test_corrupt_and_non_tar_layers_are_refused(sandbox):
    with pytest.raises(InvalidArgument):
        unpack_layer(io.BytesIO(b"\x1f\x8b" + b"garbage" * 100), sandbox / "root")
    good = ob.Layer.build([ob.File("a", os.urandom(10_000))])
    with pytest.raises(InvalidArgument):
        unpack_layer(io.BytesIO(good.blob[: len(good.blob) // 2]), sandbox / "root")


@pytest.mark.skipif(not registry_available(), reason="docker-registry not installed")
def test_malicious_image_pull_is_refused_and_leaves_nothing(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = ob.Image([ob.Layer.build([ob.File("ok", "fine")]),
                     ob.Layer.build([ob.Symlink("evil", str(outside)),
                                     ob.File("evil/pwned", "x")], add_parents=False)])
    with Registry() as reg, ImageServiceHarness() as h:
        ob.push_image(reg.url, "evil", "v1", evil)
        err = rpc_error(h.pull, f"{reg.host}/evil:v1")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "symlink" in err.details() and "evil/pwned" in err.details()
        assert os.listdir(outside) == []
        assert h.images() == []
        assert os.listdir(h.root / "snapshots") == []
        assert [p for p in (h.root / "content/blobs").rglob("*") if p.is_file()] == []


@pytest.mark.skipif(not registry_available(), reason="docker-registry not installed")
@pytest.mark.parametrize("discard", [True, False], ids=["discard", "keep"])
def test_nearly_full_filesystem_fails_cleanly_then_succeeds(tmp_path, discard):
    """The unpack of a 1.5 MB file runs out of space: with ~1 MB left when the blob is not
    kept, with ~2 MB left (the blob fits, its unpack not) when it is."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        big = ob.Image([ob.Layer.build([ob.File("small", "s")]),
                        ob.Layer.build([ob.File("big", os.urandom(1_500_000))], "none")])
        filler = mnt / "filler"
        with Registry() as reg, ImageServiceHarness(root=mnt / "images",
                                                    discard_unpacked_layers=discard) as h:
            ob.push_image(reg.url, "big", "v1", big)
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            filler.write_bytes(b"\0" * (free - (1_000_000 if discard else 2_000_000)))
            err = rpc_error(h.pull, f"{reg.host}/big:v1")
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "no space" in err.details()
            assert h.images() == []
            assert os.listdir(h.root / "snapshots") == []
            assert os.listdir(h.root / "ingest") == []
            assert [p for p in (h.root / "content/blobs").rglob("*") if p.is_file()] == []
            filler.unlink()
            assert h.pull(f"{reg.host}/big:v1") == big.config_digest
            layers = h.manager.rootfs_layers(big.config_digest)
            assert os.path.getsize(Path(layers[0]) / "big") == 1_500_000
    finally:
        subprocess.run(["umount", str(mnt)], check=True)



MALFORMED = {
    "uid beyond 32 bits": [ob.Entry("f", uid=2**40)],
    "invalid security.capability value": [
        ob.Entry("f", xattrs={"security.capability": b"\x01\x00\x00\x02"})],
    "name component longer than 255 bytes": [ob.Dir("a"), ob.File("a/" + "b" * 300, "x")],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_entries_are_invalid_argument_not_a_crash(sandbox, case):
    with pytest.raises(InvalidArgument, match="entry"):
        _unpack(sandbox, MALFORMED[case])
