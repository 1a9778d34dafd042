"""Layers unpack while they download (imageservice/layer_stream.py): what a wrong or cut
download leaves behind, layers of one image unpacked side by side, and a blob shared by
concurrent pulls at different depths of their layer stacks."""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import stat
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imageservice.manifest import Descriptor
from imageservice.registry_client import Repository
from pycri_common.errors import Unavailable
from tests.support import oci_build as ob
from tests.support.cri_client import rpc_error
from tests.support.image_harness import EMPTY_STORE, ImageServiceHarness, leftovers
from tests.support.registry import Registry, registry_available

pytestmark = pytest.mark.skipif(not registry_available(), reason="docker-registry not installed")


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    with Registry() as reg:
        yield reg


@pytest.fixture(params=[True, False], ids=["discard", "keep"])
def svc(request: pytest.FixtureRequest) -> Iterator[ImageServiceHarness]:
    """The image service, with layer blobs discarded once unpacked (the default) or kept."""
    with ImageServiceHarness(discard_unpacked_layers=request.param) as h:
        yield h


def _stored_blobs(h: ImageServiceHarness) -> set[str]:
    return h.manager.content.all_digests()


def test_layer_blobs_are_kept_only_when_configured(registry, svc):
    layers = [ob.Layer.build([ob.File(f"f{i}", os.urandom(100_000))]) for i in range(2)]
    img = ob.Image(layers)
    ob.push_image(registry.url, "kept", "v1", img)
    assert svc.pull(f"{registry.host}/kept:v1") == img.config_digest
    small = {img.manifest_digest, img.config_digest}
    if svc.manager.discard_unpacked_layers:
        assert _stored_blobs(svc) == small
        assert os.listdir(svc.root / "ingest") == []
    else:
        assert _stored_blobs(svc) == small | {la.digest for la in layers}
    top = Path(svc.manager.rootfs_layers(img.config_digest)[0])
    assert (top / "f1").stat().st_size == 100_000
    svc.remove(f"{registry.host}/kept:v1")
    assert leftovers(svc.root) == EMPTY_STORE


def _same_size_layer(name: str, compression: str) -> ob.Layer:
    """A layer whose blob's size depends only on len(name) (gzip in stored blocks)."""
    raw = ob.tar_bytes([ob.File(name, os.urandom(300_000))])
    if compression == "none":
        return ob.Layer.from_tar(raw, "none")
    return ob.Layer(gzip.compress(raw, compresslevel=0, mtime=0), ob.sha256_digest(raw), "gzip")


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_well_formed_layer_with_the_wrong_digest_leaves_no_snapshot(registry, svc,
                                                                      compression):
    # the registry serves another valid layer of the same size: the tar unpacks fine, and
    # only the digest, known at the very end of the stream, shows the swap
    good, evil = (_same_size_layer(name, compression) for name in ("good", "evil"))
    assert len(good.blob) == len(evil.blob)
    img = ob.Image([ob.Layer.build([ob.File("base", b"x")]), good])
    ob.push_image(registry.url, f"swapped-{compression}", "v1", img)
    registry.blob_path(good.digest).write_bytes(evil.blob)
    err = rpc_error(svc.pull, f"{registry.host}/swapped-{compression}:v1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match its digest" in err.details() and good.digest in err.details()
    assert svc.images() == []
    assert leftovers(svc.root) == EMPTY_STORE


def test_bytes_corrupted_mid_stream_are_reported_as_a_digest_mismatch(registry, svc):
    # compressible data: the flipped byte breaks the deflate stream long before its end,
    # and the error names the real cause (the registry sent the wrong bytes)
    layer = ob.Layer.build([ob.File("text", b"lorem ipsum dolor sit amet " * 40_000)])
    img = ob.Image([layer])
    ob.push_image(registry.url, "corrupt", "v1", img)
    bad = bytearray(layer.blob)
    bad[len(bad) // 3] ^= 0xFF
    registry.blob_path(layer.digest).write_bytes(bytes(bad))
    err = rpc_error(svc.pull, f"{registry.host}/corrupt:v1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not match its digest" in err.details()
    assert leftovers(svc.root) == EMPTY_STORE


def test_a_layer_that_unpacks_to_another_diff_id_leaves_no_blob_nor_snapshot(registry, svc):
    layer = ob.Layer.build([ob.File("f", b"data")])
    lie = ob.Layer.build([ob.File("g", b"other")])
    img = ob.Image([dataclasses.replace(layer, diff_id=lie.diff_id)])   # the config lies
    ob.push_image(registry.url, "diffid", "v1", img)
    err = rpc_error(svc.pull, f"{registry.host}/diffid:v1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unpacks to" in err.details() and lie.diff_id in err.details()
    assert leftovers(svc.root) == EMPTY_STORE


def test_a_download_cut_midway_removes_the_half_made_snapshot(registry, svc, monkeypatch):
    big = ob.Layer.build([ob.File("big", os.urandom(4 << 20))])
    ob.push_image(registry.url, "cut", "v1", ob.Image([big]))
    real = Repository.blob_chunks
    seen: dict[str, list[str]] = {}

    def cut(self: Repository, desc: Descriptor) -> Iterator[bytes]:
        n = 0
        for chunk in real(self, desc):
            yield chunk
            n += len(chunk)
            if desc.digest == big.digest and n >= desc.size // 2:
                snaps = svc.root / "snapshots"
                seen["snapshots"] = os.listdir(snaps)
                seen["files"] = [p.name for s in snaps.iterdir() for p in (s / "fs").iterdir()]
                seen["ingest"] = os.listdir(svc.root / "ingest")
                raise Unavailable("connection reset by the test")
    monkeypatch.setattr(Repository, "blob_chunks", cut)
    err = rpc_error(svc.pull, f"{registry.host}/cut:v1")
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "reset by the test" in err.details()
    # halfway through the download the layer was being unpacked already, out of sight
    assert len(seen["snapshots"]) == 1 and seen["snapshots"][0].startswith("tmp-")
    # the blob's partial file, unless it is not kept
    assert seen["files"] == ["big"]
    assert len(seen["ingest"]) == (0 if svc.manager.discard_unpacked_layers else 1)
    assert svc.images() == []
    assert leftovers(svc.root) == EMPTY_STORE


def _tar_gz_with_whiteouts() -> ob.Layer:
    """A top layer with an OCI whiteout and an opaque dir (built by hand: the names matter)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind in (("etc", tarfile.DIRTYPE), ("etc/.wh.gone", tarfile.REGTYPE),
                           ("data", tarfile.DIRTYPE), ("data/.wh..wh..opq", tarfile.REGTYPE),
                           ("data/new", tarfile.REGTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            tf.addfile(ti, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    return ob.Layer.from_tar(buf.getvalue(), "gzip")


def test_layers_unpack_side_by_side_each_into_its_own_snapshot(registry, monkeypatch):
    layers = [ob.Layer.build([ob.File("etc/gone", b"1"), ob.File("data/old", b"o")]),
              ob.Layer.build([ob.File("mid", os.urandom(200_000))]),
              _tar_gz_with_whiteouts()]
    img = ob.Image(layers)
    ob.push_image(registry.url, "sidebyside", "v1", img)
    real = Repository.blob_chunks
    barrier = threading.Barrier(3, timeout=20)
    layer_digests = {la.digest for la in layers}
    in_flight: list[int] = []

    def together(self: Repository, desc: Descriptor) -> Iterator[bytes]:
        if desc.digest in layer_digests:
            barrier.wait()   # all three layers are downloading (and unpacking) at once
            in_flight.append(sum(1 for p in (h.root / "snapshots").iterdir()
                                 if p.name.startswith("tmp-")))
        yield from real(self, desc)
    monkeypatch.setattr(Repository, "blob_chunks", together)
    with ImageServiceHarness(registry_config={"max_concurrent_downloads": 3}) as h:
        image_id = h.pull(f"{registry.host}/sidebyside:v1")
        assert image_id == img.config_digest
        assert in_flight == [3, 3, 3]
        top, mid, bottom = (Path(p) for p in h.manager.rootfs_layers(image_id))
        st = os.lstat(top / "etc/gone")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert os.getxattr(top / "data", "trusted.overlay.opaque") == b"y"
        assert sorted(os.listdir(top / "data")) == ["new"]
        assert (mid / "mid").stat().st_size == 200_000
        assert (bottom / "etc/gone").read_bytes() == b"1"
        assert [p.name for p in (h.root / "snapshots").iterdir()
                if p.name.startswith("tmp-")] == []


@pytest.mark.parametrize("discard", [False, True], ids=["keep", "discard"])
def test_a_blob_shared_by_concurrent_pulls_at_different_depths(registry, monkeypatch, discard):
    """Kept, the blob downloads once (the second pull unpacks the stored blob); discarded,
    each chain downloads it (nothing is stored to share). Both pulls get the layer."""
    shared = ob.Layer.build([ob.File("shared/data", os.urandom(1 << 20))])
    a = ob.Image([ob.Layer.build([ob.File("first", b"1")]), shared])
    b = ob.Image([shared])                 # same blob, another chain ID (no parent)
    ob.push_image(registry.url, "share-a", "v1", a)
    ob.push_image(registry.url, "share-b", "v1", b)
    real = Repository.blob_chunks
    asked = threading.Event()

    def slow(self: Repository, desc: Descriptor) -> Iterator[bytes]:
        if desc.digest == shared.digest:
            asked.set()
            time.sleep(0.3)   # long enough for the other pull to want the same blob
        yield from real(self, desc)
    monkeypatch.setattr(Repository, "blob_chunks", slow)
    before = registry.requests(f"/blobs/{shared.digest}")
    with ImageServiceHarness(discard_unpacked_layers=discard) as h:
        results: dict[str, str] = {}
        errors: list[BaseException] = []

        def pull(name: str) -> None:
            try:
                results[name] = h.pull(f"{registry.host}/{name}:v1")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
        threads = [threading.Thread(target=pull, args=(n,)) for n in ("share-a", "share-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and asked.is_set()
        assert registry.requests(f"/blobs/{shared.digest}") - before == (2 if discard else 1)
        for name, img in (("share-a", a), ("share-b", b)):
            top = Path(h.manager.rootfs_layers(results[name])[0])
            assert (top / "shared/data").stat().st_size == 1 << 20, name
            assert results[name] == img.config_digest
        assert [p.name for p in (h.root / "snapshots").iterdir()
                if p.name.startswith("tmp-")] == []
