"""`pycri image import` / `pycri image ls` on OCI-layout and docker archives."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from cri_server.cli import main
from imageservice.manager import ImageManager
from tests.support import oci_build as ob


def _cli(argv: list[str]) -> int:
    return main(argv)


@pytest.fixture
def image() -> ob.Image:
    return ob.Image([ob.Layer.build(ob.busybox_rootfs_files()),
                     ob.Layer.build([ob.File("app/hello", "hi\n"), ob.Whiteout("etc/hostname")],
                                    "zstd")],
                    ob.Config(cmd=["cat", "/app/hello"], user="1000"))


def _check_store(root: Path, image: ob.Image, tag: str) -> None:
    m = ImageManager(root / "images")
    try:
        rec = m.resolve(tag)
        assert rec is not None and rec.id == image.config_digest
        layers = m.rootfs_layers(rec.id)
        assert (Path(layers[0]) / "app/hello").read_text() == "hi\n"
        assert (Path(layers[1]) / "bin/busybox").is_file()
    finally:
        m.close()


def test_import_oci_archive_and_list(tmp_path, image, capsys):
    arc = tmp_path / "img.tar"
    ob.write_oci_archive(arc, image, "example.com/app:v1")
    root = tmp_path / "root"
    assert _cli(["image", "import", str(arc), "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert image.config_digest in out and "example.com/app:v1" in out
    _check_store(root, image, "example.com/app:v1")
    assert _cli(["image", "ls", "--root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert out[1].split()[:3] == ["example.com/app", "v1", image.config_digest[7:20]]


def test_import_oci_archive_with_bare_tag_needs_name(tmp_path, image, capsys):
    arc = tmp_path / "img.tar"
    ob.write_oci_archive(arc, image, "v2")
    root = tmp_path / "root"
    assert _cli(["image", "import", str(arc), "--root", str(root), "--name", "local/app"]) == 0
    _check_store(root, image, "docker.io/local/app:v2")


def test_import_docker_archive(tmp_path, image, capsys):
    arc = tmp_path / "docker.tar"
    ob.write_docker_archive(arc, image, ["myapp:1.0"])
    root = tmp_path / "root"
    assert _cli(["image", "import", str(arc), "--root", str(root)]) == 0
    _check_store(root, image, "docker.io/library/myapp:1.0")


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_import_archive_written_by_skopeo(tmp_path, image):
    image = ob.Image([ob.Layer.from_tar(ob.tar_bytes([ob.File("app/hello", "hi\n")]), "gzip")],
                     image.config)
    src = tmp_path / "oci.tar"
    ob.write_oci_archive(src, image, "example.com/app:v1")
    dst = tmp_path / "skopeo-docker.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet",
                    f"oci-archive:{src}:example.com/app:v1",
                    f"docker-archive:{dst}:example.com/app:skopeo"], check=True, timeout=60)
    root = tmp_path / "root"
    assert _cli(["image", "import", str(dst), "--root", str(root)]) == 0
    m = ImageManager(root / "images")
    try:
        rec = m.resolve("example.com/app:skopeo")
        assert rec is not None
        assert m.image_config(rec.id).cmd == ["cat", "/app/hello"]
        assert (Path(m.rootfs_layers(rec.id)[0]) / "app/hello").read_text() == "hi\n"
    finally:
        m.close()


def test_import_garbage_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar")
    root = tmp_path / "root"
    assert _cli(["image", "import", str(bad), "--root", str(root)]) == 1
    assert "import failed" in capsys.readouterr().err


def test_import_next_to_a_collecting_daemon_keeps_its_blobs(tmp_path, image):
    """The daemon collects garbage (RemoveImage, failed pulls) while `pycri image import`
    writes blobs no image refers to yet: they must survive, and the image must be whole."""
    from imageservice.importer import import_archive
    arc = tmp_path / "img.tar"
    ob.write_oci_archive(arc, image, "example.com/app:v1")
    root = tmp_path / "root"
    daemon = ImageManager(root / "images")                    # exclusive: it collects
    importer = ImageManager(root / "images", exclusive=False)  # the CLI's manager
    stray_body = b"written by nobody's import"
    stray = "sha256:" + hashlib.sha256(stray_body).hexdigest()
    try:
        rounds = []

        def collect_meanwhile(done: int, total: int) -> None:
            daemon.gc()
            rounds.append(done)
        import_archive(importer, arc, progress=collect_meanwhile)
        assert len(rounds) > 2
        _check_store(root, image, "example.com/app:v1")
        daemon.content.write_bytes(stray, stray_body)      # garbage once nobody imports
        daemon.gc()
        assert not daemon.content.exists(stray)
    finally:
        importer.close()
        daemon.close()


@pytest.mark.parametrize("discard", [True, False], ids=["discard", "keep"])
def test_imported_layer_blobs_follow_the_discard_setting(tmp_path, image, discard):
    """Imported layers are unpacked from their stored blobs; discarded (the default), the
    next collection removes those blobs and the image still runs from its snapshots."""
    arc = tmp_path / "img.tar"
    ob.write_oci_archive(arc, image, "example.com/app:v1")
    root = tmp_path / "root"
    conf = tmp_path / "pycri.toml"
    conf.write_text(f"[images]\ndiscard_unpacked_layers = {str(discard).lower()}\n")
    assert _cli(["image", "import", str(arc), "--root", str(root), "--config", str(conf)]) == 0
    _check_store(root, image, "example.com/app:v1")   # the daemon's start-up collects
    m = ImageManager(root / "images", discard_unpacked_layers=discard)
    try:
        stored = m.content.all_digests()
    finally:
        m.close()
    layers = {la.digest for la in image.layers}
    assert image.config_digest in stored
    assert (layers & stored) == (set() if discard else layers)
    _check_store(root, image, "example.com/app:v1")
