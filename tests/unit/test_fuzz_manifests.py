"""Fuzz: manifests, indexes and image configs (imageservice.manifest) parse or raise a
PycriError, and every field the daemon reads from a parsed one has the type it expects."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from imageservice.manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    ImageConfig,
    detect_media_type,
    parse_index,
    parse_manifest,
    select_platform,
    user_fields,
)
from pycri_common.errors import PycriError
from tests.support.fuzz import json_paths

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")

# real samples (shapes as registries serve them)
OCI_MANIFEST: dict[str, Any] = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 1469},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2,
                "size": 2152262}],
    "annotations": {"org.opencontainers.image.base.name": "docker.io/library/alpine:3.19"}}
DOCKER_MANIFEST: dict[str, Any] = {
    "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1,
               "size": 7023},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2,
                "size": 32654}, {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                 "digest": D3, "size": 16724}]}
INDEX: dict[str, Any] = {
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D1, "size": 1024,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D2, "size": 1024,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D3, "size": 566,
         "annotations": {"vnd.docker.reference.digest": D1,
                         "vnd.docker.reference.type": "attestation-manifest"},
         "platform": {"architecture": "unknown", "os": "unknown"}}]}
CONFIG: dict[str, Any] = {
    "architecture": "amd64", "os": "linux", "created": "2024-01-27T00:00:00Z",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
               "Cmd": ["/bin/sh"], "Entrypoint": None, "WorkingDir": "/", "User": "1000:1000",
               "StopSignal": "SIGTERM", "Volumes": {"/data": {}}, "Labels": {"a": "b"}},
    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
    "history": [{"created": "2024-01-27T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD"}]}
SAMPLES = [OCI_MANIFEST, DOCKER_MANIFEST, INDEX, CONFIG]

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from([D1, "sha256:x", "linux", "amd64", *MANIFEST_TYPES,
                                              *INDEX_TYPES]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A real sample with one node replaced (or deleted), as JSON bytes."""
    doc = json.loads(json.dumps(draw(st.sampled_from(SAMPLES))))
    path = draw(st.sampled_from(json_paths(doc)))
    value = draw(_JSON)
    if not path:
        doc = value
    else:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return json.dumps(doc).encode()


_DOCS = st.one_of(_mutated(), _JSON.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64),
                  st.sampled_from([b"[" * 100_000, b"{" * 100_000, b'{"a":"\xff"}', b""]))


def _use_config(cfg: ImageConfig) -> None:
    """Everything the daemon reads from an image config."""
    assert all(isinstance(x, str) for x in cfg.diff_ids + cfg.env + cfg.entrypoint + cfg.cmd
               + cfg.volumes)
    for s in (cfg.working_dir, cfg.user, cfg.stop_signal, cfg.os, cfg.architecture):
        assert isinstance(s, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in cfg.labels.items())
    uid, name = user_fields(cfg.user)
    assert uid is None or uid >= 0


@settings(max_examples=150, deadline=None, database=None)
@given(_DOCS, st.sampled_from(["", *MANIFEST_TYPES, *INDEX_TYPES, "text/plain; charset=x"]))
@example(json.dumps(OCI_MANIFEST).encode(), "")
@example(json.dumps(DOCKER_MANIFEST).encode(), "")
@example(json.dumps(INDEX).encode(), "")
@example(json.dumps(CONFIG).encode(), "")
@example(json.dumps({**INDEX, "manifests": [{**INDEX["manifests"][0], "platform": ["x"]}]})
         .encode(), "")
@example(json.dumps({**OCI_MANIFEST, "annotations": ["ab"]}).encode(), "")
@example(json.dumps({**CONFIG, "config": {"Env": 5, "Labels": {"a": 1}}}).encode(), "")
def test_manifest_index_config(data: bytes, header_type: str) -> None:
    try:
        mt = detect_media_type(data, header_type)
        assert mt in MANIFEST_TYPES + INDEX_TYPES
    except PycriError:
        pass
    try:
        m = parse_manifest(data)
        assert isinstance(m.media_type, str)
        for d in (m.config, *m.layers):
            assert isinstance(d.digest, str) and isinstance(d.size, int) and d.size >= 0
            assert all(isinstance(u, str) for u in d.urls)
        assert all(isinstance(v, str) for v in m.annotations.values())
    except PycriError:
        pass
    try:
        entries = parse_index(data)
        for e in entries:
            assert isinstance(e.platform, dict) and isinstance(e.media_type, str)
        for want in (("linux", "amd64", ""), ("linux", "arm64", "v8")):
            try:
                select_platform(entries, want)
            except PycriError:
                pass
    except PycriError:
        pass
    try:
        _use_config(ImageConfig.parse(data))
    except PycriError:
        pass
