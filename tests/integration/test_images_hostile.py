"""Hostile image input through the real gRPC API and the CLI: a manifest nested far too deep,
indexes nested past the limit, an import archive that is a FIFO or whose manifest.json is
`[` x 100000. Each is an INVALID_ARGUMENT (or one line from the CLI) naming what is wrong."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imageservice.manifest import MAX_INDEX_DEPTH
from tests.support import oci_build as ob
from tests.support.cri_client import rpc_error
from tests.support.image_harness import ImageServiceHarness
from tests.support.registry import Registry, registry_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    if not registry_available():
        pytest.skip("docker-registry not installed")
    with Registry() as reg:
        yield reg


@pytest.fixture(scope="module")
def image() -> ob.Image:
    return ob.Image([ob.Layer.build([ob.File("hello", b"hi\n")])], ob.Config(cmd=["sh"]))


@pytest.fixture
def svc() -> Iterator[ImageServiceHarness]:
    with ImageServiceHarness() as h:
        yield h


def _index(child: bytes, media_type: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": ob.MT_OCI_INDEX, "manifests": [
        {"mediaType": media_type, "digest": ob.sha256_digest(child), "size": len(child),
         "platform": {"os": "linux", "architecture": ob.host_arch()}}]}).encode()


def _push_nested_indexes(registry: Registry, image: ob.Image, repo: str, depth: int) -> None:
    """repo:latest is an index of an index ... (depth indexes) of image."""
    with ob.Pusher(registry.url) as p:
        p.push_image(repo, None, image)
        body, media_type = image.manifest_bytes, image.manifest_media_type
        for level in range(depth):
            body, media_type = _index(body, media_type), ob.MT_OCI_INDEX
            p.push_manifest(repo, "latest" if level == depth - 1 else ob.sha256_digest(body),
                            body, media_type)


def test_manifest_nested_too_deep_is_invalid_argument(registry, image, svc):
    # valid JSON the registry accepts (it ignores the unknown field), 5000 levels deep in it
    doc = json.loads(image.manifest_bytes)
    body = json.dumps(doc)[:-1].encode() + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    with ob.Pusher(registry.url) as p:
        p.push_image("deep", None, image)
        p.push_manifest("deep", "v1", body, image.manifest_media_type)
    err = rpc_error(svc.pull, f"{registry.host}/deep:v1")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "manifest nests arrays/objects deeper than 64 levels" in err.details()


def test_indexes_nested_within_the_limit_are_followed(registry, image, svc):
    _push_nested_indexes(registry, image, "nest3", 3)
    assert svc.pull(f"{registry.host}/nest3:latest") == image.config_digest


def test_indexes_nested_past_the_limit_name_the_limit(registry, image, svc):
    _push_nested_indexes(registry, image, "nest40", 40)
    err = rpc_error(svc.pull, f"{registry.host}/nest40:latest")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert f"nests indexes deeper than {MAX_INDEX_DEPTH} levels (the limit)" in err.details()
    assert svc.manager.list_images() == []


def _cli_import(archive: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cri_server.cli", "image", "import",
                           str(archive), "--root", str(root)],
                          check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _assert_one_line_failure(proc: subprocess.CompletedProcess[str], want: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("pycri: import failed: ") and want in lines[0], lines[0]


def test_cli_import_of_a_deeply_nested_manifest_json_is_one_line(tmp_path):
    arc = tmp_path / "deep.tar"
    deep = b"[" * 100_000
    with tarfile.open(arc, "w") as tf:
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(deep)
        tf.addfile(ti, io.BytesIO(deep))
    _assert_one_line_failure(_cli_import(arc, tmp_path / "root"),
                             "manifest.json of the archive nests arrays/objects deeper than 64")


def test_cli_import_of_a_fifo_is_one_line(tmp_path):
    fifo = tmp_path / "image.tar"
    os.mkfifo(fifo)
    try:
        proc = _cli_import(fifo, tmp_path / "root")
    finally:
        try:   # a failing (blocked) run: let its open() return
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    _assert_one_line_failure(proc, f"image archive {fifo}: is a FIFO, not a regular file")
