"""Manifests, indexes and image configs: media types, parsing, platform choice.

Handles Docker schema 2 manifests and manifest lists and OCI manifests and
indexes. An index is resolved to the host's platform (linux/<arch>, with the
arm variant rules of containerd's default matcher kept simple: an exact
variant match is preferred, any variant of the architecture accepted).
"""
from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imageservice.reference import is_digest
from pycri_common.bounded_json import load_json
from pycri_common.errors import InvalidArgument, NotFound

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (MT_DOCKER_MANIFEST, MT_OCI_MANIFEST)
INDEX_TYPES = (MT_DOCKER_LIST, MT_OCI_INDEX)
ACCEPT = f"{MT_OCI_INDEX}, {MT_DOCKER_LIST}, {MT_OCI_MANIFEST}, {MT_DOCKER_MANIFEST}"

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
}

_ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm",
           "i686": "386", "i386": "386", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64"}


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) of this machine in OCI terms."""
    m = platform.machine()
    arch = _ARCHES.get(m, m)
    variant = {"armv7l": "v7", "armv6l": "v6", "aarch64": "v8"}.get(m, "")
    return "linux", arch, variant


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_json(cls, d: Any, what: str) -> Descriptor:
        if not isinstance(d, dict):
            raise InvalidArgument(f"{what}: descriptor is not an object")
        digest = d.get("digest")
        size = d.get("size")
        if not isinstance(digest, str) or not is_digest(digest):
            raise InvalidArgument(f"{what}: bad digest {digest!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{what}: bad size {size!r}")
        media_type = d.get("mediaType") or ""
        if not isinstance(media_type, str):
            raise InvalidArgument(f"{what}: mediaType must be a string")
        plat = d.get("platform") or {}
        if not isinstance(plat, dict):
            raise InvalidArgument(f"{what}: platform must be an object")
        return cls(media_type, digest, size, dict(plat), tuple(_strings(d.get("urls"), what, "urls")),
                   string_map(d.get("annotations"), f"{what} annotations"))


def _strings(v: Any, what: str, name: str) -> list[str]:
    """A JSON list of strings (null = empty)."""
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise InvalidArgument(f"{what}: {name} must be a list of strings")
    return list(v)


def string_map(v: Any, what: str) -> dict[str, str]:
    """A JSON object of strings (null = empty), e.g. annotations and labels."""
    if v is None:
        return {}
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise InvalidArgument(f"{what} must be an object of strings")
    return dict(v)


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


MAX_MANIFEST_BYTES = 4 * 1024 * 1024     # manifests and indexes (registries use the same cap)
MAX_CONFIG_BYTES = 16 * 1024 * 1024      # image configs (read into memory and sqlite)
MAX_INDEX_DEPTH = 8                      # indexes inside indexes followed to find a manifest


def _load(data: bytes, what: str, max_bytes: int = MAX_MANIFEST_BYTES) -> dict[str, Any]:
    obj = load_json(data, what, max_bytes)
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what} is not a JSON object")
    return obj


def detect_media_type(data: bytes, header_type: str = "") -> str:
    """The manifest's media type from its mediaType field, else the HTTP header, else shape."""
    obj = _load(data, "manifest")
    mt = obj.get("mediaType") or ""
    if not isinstance(mt, str):
        raise InvalidArgument("manifest mediaType must be a string")
    if not mt:
        mt = header_type.split(";")[0].strip()
    if mt not in MANIFEST_TYPES + INDEX_TYPES:
        if obj.get("schemaVersion") == 1:
            raise InvalidArgument("Docker schema 1 manifests are not supported; "
                                  "push the image again with a current client")
        if "manifests" in obj:
            mt = MT_OCI_INDEX
        elif "config" in obj and "layers" in obj:
            mt = MT_OCI_MANIFEST
        else:
            raise InvalidArgument(f"unsupported manifest media type {mt!r}")
    return mt


def parse_manifest(data: bytes) -> Manifest:
    obj = _load(data, "manifest")
    mt = obj.get("mediaType") or MT_OCI_MANIFEST
    if obj.get("schemaVersion") != 2:
        raise InvalidArgument("manifest schemaVersion is not 2")
    config = Descriptor.from_json(obj.get("config"), "manifest config")
    layers_raw = obj.get("layers")
    if not isinstance(layers_raw, list):
        raise InvalidArgument("manifest has no layers list")
    layers = tuple(Descriptor.from_json(la, f"manifest layer {i}")
                   for i, la in enumerate(layers_raw))
    for la in layers:
        if la.media_type and la.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"unsupported layer media type {la.media_type!r}")
    if not isinstance(mt, str):
        raise InvalidArgument("manifest mediaType must be a string")
    return Manifest(mt, config, layers, string_map(obj.get("annotations"), "manifest annotations"))


def parse_index(data: bytes) -> list[Descriptor]:
    obj = _load(data, "index")
    raw = obj.get("manifests")
    if not isinstance(raw, list):
        raise InvalidArgument("index has no manifests list")
    return [Descriptor.from_json(m, f"index entry {i}") for i, m in enumerate(raw)]


def _platform_matches(e: Descriptor, os_name: str, arch: str) -> bool:
    return e.platform.get("os") == os_name and e.platform.get("architecture") == arch


def select_platform(entries: list[Descriptor],
                    want: tuple[str, str, str] | None = None) -> Descriptor:
    """The index entry for want (default: this host); NotFound naming what exists.

    The entry may be a nested index (one for the platform, or one without a platform):
    the caller follows it (see follow_index)."""
    os_name, arch, variant = want or host_platform()
    candidates = [e for e in entries
                  if e.media_type in MANIFEST_TYPES + ("",) and _platform_matches(e, os_name, arch)]
    if not candidates:
        candidates = [e for e in entries if e.media_type in INDEX_TYPES
                      and (_platform_matches(e, os_name, arch) or not e.platform)]
    if not candidates:
        odd = sorted({e.media_type for e in entries if _platform_matches(e, os_name, arch)})
        if odd:
            raise InvalidArgument(f"the index entries for {os_name}/{arch} have unsupported "
                                  f"media types: {', '.join(repr(t) for t in odd)}")
        have = sorted({f"{e.platform.get('os')}/{e.platform.get('architecture')}"
                       for e in entries})
        raise NotFound(f"no image for platform {os_name}/{arch} in the index "
                       f"(it has: {', '.join(have) or 'nothing'})")
    for e in candidates:
        if variant and e.platform.get("variant") == variant:
            return e
    return candidates[0]


# fetch(descriptor) -> (digest, media type, body) of what it names (and keeps it, if it must)
Fetch = Callable[[Descriptor], tuple[str, str, bytes]]


def follow_index(body: bytes, fetch: Fetch,
                 want: tuple[str, str, str] | None = None) -> tuple[str, bytes, list[str]]:
    """From an index to the platform's manifest, through at most MAX_INDEX_DEPTH indexes
    (this one included): (manifest digest, manifest body, digests of the nested indexes
    fetched on the way). Deeper nesting is an InvalidArgument naming the limit."""
    nested: list[str] = []
    for _ in range(MAX_INDEX_DEPTH):
        digest, media_type, body = fetch(select_platform(parse_index(body), want))
        if media_type not in INDEX_TYPES:
            return digest, body, nested
        nested.append(digest)
    raise InvalidArgument(f"the image index nests indexes deeper than {MAX_INDEX_DEPTH} levels "
                          "(the limit)")


@dataclass(frozen=True)
class ImageConfig:
    """What the runtime reads from an image config (OCI image-spec "config" object)."""

    raw: dict[str, Any]

    @classmethod
    def parse(cls, data: bytes) -> ImageConfig:
        obj = _load(data, "image config", MAX_CONFIG_BYTES)
        rootfs = obj.get("rootfs")
        if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
            raise InvalidArgument("image config has no rootfs.diff_ids")
        for d in rootfs["diff_ids"]:
            if not isinstance(d, str) or not is_digest(d):
                raise InvalidArgument(f"image config has a bad diff_id {d!r}")
        cfg = obj.get("config")
        if cfg is not None and not isinstance(cfg, dict):
            raise InvalidArgument("image config: config must be an object")
        _check_config_fields(cfg or {})
        return cls(obj)

    @property
    def diff_ids(self) -> list[str]:
        return list(self.raw["rootfs"]["diff_ids"])

    @property
    def _cfg(self) -> dict[str, Any]:
        c = self.raw.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def env(self) -> list[str]:
        return list(self._cfg.get("Env") or [])

    @property
    def entrypoint(self) -> list[str]:
        return list(self._cfg.get("Entrypoint") or [])

    @property
    def cmd(self) -> list[str]:
        return list(self._cfg.get("Cmd") or [])

    @property
    def working_dir(self) -> str:
        return str(self._cfg.get("WorkingDir") or "")

    @property
    def user(self) -> str:
        return str(self._cfg.get("User") or "")

    @property
    def stop_signal(self) -> str:
        return str(self._cfg.get("StopSignal") or "")

    @property
    def volumes(self) -> list[str]:
        return sorted((self._cfg.get("Volumes") or {}).keys())

    @property
    def labels(self) -> dict[str, str]:
        return dict(self._cfg.get("Labels") or {})

    @property
    def os(self) -> str:
        return str(self.raw.get("os", ""))

    @property
    def architecture(self) -> str:
        return str(self.raw.get("architecture", ""))


_CONFIG_LISTS = ("Env", "Entrypoint", "Cmd")
_CONFIG_STRINGS = ("WorkingDir", "User", "StopSignal")


def _check_config_fields(cfg: dict[str, Any]) -> None:
    """The fields ImageConfig's properties read have the types they need (null allowed)."""
    for name in _CONFIG_LISTS:
        _strings(cfg.get(name), "image config", f"config.{name}")
    for name in _CONFIG_STRINGS:
        if not isinstance(cfg.get(name) or "", str):
            raise InvalidArgument(f"image config: config.{name} must be a string")
    if not isinstance(cfg.get("Volumes") or {}, dict):
        raise InvalidArgument("image config: config.Volumes must be an object")
    string_map(cfg.get("Labels"), "image config config.Labels")


def user_fields(user: str) -> tuple[int | None, str]:
    """(uid, username) for CRI's Image.uid/username from a config User string.

    "1000" / "1000:1000" -> (1000, ""); "www-data" / "www-data:grp" -> (None, "www-data");
    "" -> (None, "").
    """
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name
