"""Outside JSON is bounded in size and nesting before it is parsed: `[` x 100000 is an
InvalidArgument naming the document, never a RecursionError."""
from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest

from cni.config import InvalidConfig, load_file
from imageservice.auth import DockerConfig
from imageservice.importer import import_archive
from imageservice.manager import ImageManager
from imageservice.manifest import ImageConfig, detect_media_type, parse_index, parse_manifest
from imageservice.registry_hosts import RegistryHosts
from pycri_common.bounded_json import MAX_JSON_DEPTH, load_json, nesting_depth_exceeds
from pycri_common.errors import InvalidArgument, Unavailable
from runtime.seccomp import load_localhost_profile

DEEP = b"[" * 100_000


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[1]" + b"}" * (depth - 1)


def test_depth_limit_is_exact() -> None:
    assert load_json(_nested(MAX_JSON_DEPTH), "doc")
    with pytest.raises(InvalidArgument, match=f"doc nests arrays/objects deeper than {MAX_JSON_DEPTH}"):
        load_json(_nested(MAX_JSON_DEPTH + 1), "doc")


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    text = json.dumps({"a": "[" * 1000, "b": ['\\"[[[[', "{{{{\\"], "c": "\"[[[[\""}).encode()
    assert load_json(text, "doc")["a"] == "[" * 1000
    assert not nesting_depth_exceeds(text, 2)
    # an escaped quote does not end a string; an escaped backslash before the quote does
    assert nesting_depth_exceeds(b'["\\\\"' + b"[" * 10 + b"]" * 10 + b"]", 10)
    assert not nesting_depth_exceeds(b'["\\"' + b"[" * 10 + b'"]', 1)


def test_unbalanced_and_unterminated_input_is_invalid_not_a_crash() -> None:
    for doc in (DEEP, b"{" * 100_000, b'"' + b"\\" * 99_999, b"]" * 100_000 + DEEP, b'["' + DEEP):
        with pytest.raises(InvalidArgument, match=r"^doc "):
            load_json(doc, "doc")


def test_size_and_encoding_and_error_class() -> None:
    with pytest.raises(InvalidArgument, match="doc is larger than 10 bytes"):
        load_json(b"[" + b" " * 10 + b"]", "doc", max_bytes=10)
    with pytest.raises(InvalidArgument, match="not UTF-8"):
        load_json(b'"\xff"', "doc")
    with pytest.raises(Unavailable, match="token answer nests"):
        load_json(DEEP, "token answer", error=Unavailable)


@pytest.mark.parametrize("parse, what", [
    (parse_manifest, "manifest"), (parse_index, "index"), (ImageConfig.parse, "image config"),
    (detect_media_type, "manifest")])
def test_image_documents(parse, what) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=f"^{what} nests arrays/objects deeper than"):
        parse(DEEP)
    # valid JSON, deep inside an unknown field
    with pytest.raises(InvalidArgument, match="deeper than"):
        parse(b'{"schemaVersion": 2, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}")


def test_seccomp_profile(tmp_path: Path) -> None:
    prof = tmp_path / "deep.json"
    prof.write_bytes(DEEP)
    with pytest.raises(InvalidArgument, match=f"seccomp profile {prof} nests"):
        load_localhost_profile(str(prof))


def test_import_manifest_json(tmp_path: Path) -> None:
    arc = tmp_path / "deep.tar"
    with tarfile.open(arc, "w") as tf:
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(DEEP)
        tf.addfile(ti, io.BytesIO(DEEP))
    mgr = ImageManager(tmp_path / "images")
    try:
        with pytest.raises(InvalidArgument, match=r"manifest\.json of the archive nests"):
            import_archive(mgr, arc)
    finally:
        mgr.close()


def test_docker_config_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "config.json"
    cfg.write_bytes(DEEP)
    with caplog.at_level(logging.WARNING):
        assert not DockerConfig(str(cfg)).lookup("example.com")
    assert "nests arrays/objects deeper than" in caplog.text


def test_cni_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "10-deep.conflist"
    conf.write_bytes(DEEP)
    with pytest.raises(InvalidConfig, match=f"CNI config file {conf} nests"):
        load_file(str(conf))


def test_hosts_toml_nested_too_deeply(tmp_path: Path) -> None:
    d = tmp_path / "example.com"
    d.mkdir()
    (d / "hosts.toml").write_text("server = " + "[" * 100_000)
    with pytest.raises(InvalidArgument, match=r"hosts\.toml: arrays or tables nested too deeply"):
        RegistryHosts(str(tmp_path)).endpoints("example.com")
