"""`pycri image import`: load a docker-archive or OCI-layout tarball into the image store.

Accepted inputs (plain or gzip/xz/bz2-compressed tar files):
- OCI image layout archives (``oci-layout`` + ``index.json`` + ``blobs/<algo>/<hex>``), as
  ``skopeo copy … oci-archive:FILE:REF`` and ``buildah push … oci-archive:`` write them.
  Names come from the ``io.containerd.image.name`` or ``org.opencontainers.image.ref.name``
  annotation (a bare tag there is combined with ``--name``), else from ``--name``.
  A nested index is resolved to the host platform.
- Docker archives (``manifest.json`` with Config/RepoTags/Layers), as ``docker save`` and
  ``skopeo copy … docker-archive:`` write them. RepoTags become the image's tags.

Every blob is verified against its digest while it is copied into the content store.
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imageservice.manager import ImageManager
from imageservice.manifest import (
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    MT_OCI_CONFIG,
    MT_OCI_MANIFEST,
    Descriptor,
    Fetch,
    ImageConfig,
    detect_media_type,
    follow_index,
    parse_index,
    parse_manifest,
)
from imageservice.reference import parse
from pycri_common.bounded_json import load_json
from pycri_common.errors import InvalidArgument
from pycri_common.outside_files import open_regular_file

Progress = Callable[[int, int], None]   # (bytes done, bytes total)
_CHUNK = 1024 * 1024


@dataclass
class ImportedImage:
    image_id: str
    names: list[str]


class _Archive:
    def __init__(self, path: Path, progress: Progress | None) -> None:
        # a FIFO or device named on the command line must not hang the import
        self.file = os.fdopen(open_regular_file(path, "image archive"), "rb")
        try:
            self.tf = tarfile.open(fileobj=self.file, mode="r:*")  # noqa: SIM115 - see close()
            members = self.tf.getmembers()
        except (OSError, EOFError, tarfile.TarError) as e:
            self.file.close()
            raise InvalidArgument(f"cannot read {path} as a tar archive: {e}") from None
        except BaseException:
            self.file.close()
            raise
        self.members = {m.name.removeprefix("./"): m for m in members if m.isreg()}
        self.total = sum(m.size for m in self.members.values())
        self.done = 0
        self.progress = progress

    def close(self) -> None:
        self.tf.close()
        self.file.close()

    def has(self, name: str) -> bool:
        return name in self.members

    def open(self, name: str) -> IO[bytes]:
        m = self.members.get(name)
        if m is None:
            raise InvalidArgument(f"the archive has no file {name!r}")
        f = self.tf.extractfile(m)
        assert f is not None
        return f

    def read(self, name: str, limit: int = 16 * 1024 * 1024) -> bytes:
        m = self.members.get(name)
        if m is not None and m.size > limit:
            raise InvalidArgument(f"{name} in the archive is larger than {limit} bytes")
        return self.open(name).read()

    def chunks(self, name: str) -> Iterator[bytes]:
        with self.open(name) as f:
            while True:
                b = f.read(_CHUNK)
                if not b:
                    return
                self.done += len(b)
                if self.progress is not None:
                    self.progress(self.done, self.total)
                yield b

    def digest_of(self, name: str) -> tuple[str, int]:
        h = hashlib.sha256()
        n = 0
        with self.open(name) as f:
            while b := f.read(_CHUNK):
                h.update(b)
                n += len(b)
        return "sha256:" + h.hexdigest(), n


def import_archive(manager: ImageManager, path: str | Path, name: str = "",
                   progress: Progress | None = None) -> list[ImportedImage]:
    """Loads every image of the archive; returns their IDs and names."""
    arc = _Archive(Path(path), progress)
    try:
        with manager.importing():
            if arc.has("index.json"):
                return _import_oci(manager, arc, name)
            if arc.has("manifest.json"):
                return _import_docker(manager, arc, name)
        raise InvalidArgument(f"{path} is neither an OCI layout archive (index.json) nor a "
                              "docker archive (manifest.json)")
    finally:
        arc.close()


def _blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _oci_names(annotations: dict[str, str], name: str) -> list[str]:
    full = annotations.get("io.containerd.image.name", "")
    if full:
        return [full]
    ref = annotations.get("org.opencontainers.image.ref.name", "")
    if ref and ("/" in ref or ":" in ref or "@" in ref):
        return [ref]
    if ref and name:
        base = parse(name, default_tag=False)
        return [f"{base.name}:{ref}"]
    return [name] if name else []


def _fetcher(manager: ImageManager, arc: _Archive, nested: list[str]) -> Fetch:
    """follow_index's fetch from the archive: nested indexes are stored and listed in nested."""
    def fetch(d: Descriptor) -> tuple[str, str, bytes]:
        child = arc.read(_blob_name(d.digest), MAX_MANIFEST_BYTES)
        media_type = detect_media_type(child, d.media_type)
        if media_type in INDEX_TYPES:
            manager.content.ingest(d.digest, d.size, arc.chunks(_blob_name(d.digest)))
            nested.append(d.digest)
        return d.digest, media_type, child
    return fetch


def _import_oci(manager: ImageManager, arc: _Archive, name: str) -> list[ImportedImage]:
    out = []
    for desc in parse_index(arc.read("index.json", MAX_MANIFEST_BYTES)):
        body = arc.read(_blob_name(desc.digest), MAX_MANIFEST_BYTES)
        extra: list[str] = []
        if detect_media_type(body, desc.media_type) in INDEX_TYPES:
            manager.content.ingest(desc.digest, desc.size, arc.chunks(_blob_name(desc.digest)))
            extra.append(desc.digest)
            _, body, _ = follow_index(body, _fetcher(manager, arc, extra))
        manifest = parse_manifest(body)
        for d in [manifest.config, *manifest.layers]:
            if not manager.content.exists(d.digest):
                manager.content.ingest(d.digest, d.size, arc.chunks(_blob_name(d.digest)))
        names = _oci_names(desc.annotations, name)
        image_id = manager.install_local(body, "sha256:" + hashlib.sha256(body).hexdigest(),
                                         names, extra_blobs=extra)
        out.append(ImportedImage(image_id, names))
    return out


def _layer_media_type(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "application/vnd.oci.image.layer.v1.tar+gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "application/vnd.oci.image.layer.v1.tar+zstd"
    return "application/vnd.oci.image.layer.v1.tar"


def _import_docker(manager: ImageManager, arc: _Archive, name: str) -> list[ImportedImage]:
    entries = load_json(arc.read("manifest.json", MAX_MANIFEST_BYTES), "manifest.json of the archive",
                        MAX_MANIFEST_BYTES)
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("manifest.json lists no images")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Layers") or [], list) \
                or not isinstance(entry.get("RepoTags") or [], list):
            raise InvalidArgument(f"manifest.json entry {i} is not an object with a Config, "
                                  "a Layers list and a RepoTags list")
        cfg_name = str(entry.get("Config", "")).removeprefix("./")
        config_bytes = arc.read(cfg_name)
        ImageConfig.parse(config_bytes)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        manager.content.write_bytes(config_digest, config_bytes)
        layers = []
        for layer_name in entry.get("Layers") or []:
            layer_name = str(layer_name).removeprefix("./")
            digest, size = arc.digest_of(layer_name)
            with arc.open(layer_name) as f:
                head = f.read(4)
            if not manager.content.exists(digest):
                manager.content.ingest(digest, size, arc.chunks(layer_name))
            layers.append({"mediaType": _layer_media_type(head), "digest": digest,
                           "size": size})
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
            "config": {"mediaType": MT_OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers}).encode()
        names = [str(t) for t in entry.get("RepoTags") or []] or ([name] if name else [])
        image_id = manager.install_local(manifest, "sha256:" + hashlib.sha256(manifest).hexdigest(),
                                         names)
        out.append(ImportedImage(image_id, names))
    return out
