"""Image references, normalised the way kubelet, Docker and containerd do.

``busybox`` -> ``docker.io/library/busybox:latest``; ``name:tag``, ``name@sha256:…``,
``name:tag@sha256:…``; registries with ports (``127.0.0.1:5000/app``) and the
``localhost`` registry. The first path component is a registry host when it
contains ``.`` or ``:`` or is ``localhost`` (the distribution/reference rule);
otherwise the registry is ``docker.io`` and single names get ``library/``.
Bad references raise ``InvalidArgument`` with the reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pycri_common.errors import InvalidArgument
from pycri_common.text import shorten

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)   # Go's \w: ASCII only
_DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Reference:
    domain: str          # docker.io, 127.0.0.1:5000, registry.k8s.io
    path: str            # library/busybox, pause
    tag: str = ""        # "" when absent
    digest: str = ""     # "sha256:…" or ""

    @property
    def name(self) -> str:
        """domain/path, the repository's full name."""
        return f"{self.domain}/{self.path}"

    @property
    def tagged(self) -> str:
        """name:tag ("" without a tag)."""
        return f"{self.name}:{self.tag}" if self.tag else ""

    @property
    def digested(self) -> str:
        """name@digest ("" without a digest)."""
        return f"{self.name}@{self.digest}" if self.digest else ""

    @property
    def object(self) -> str:
        """What the registry is asked for: the digest when present, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s


def is_digest(s: str) -> bool:
    return bool(_DIGEST_RE.fullmatch(s))


def validate_digest(s: str) -> str:
    if not is_digest(s):
        raise InvalidArgument(f"invalid digest {s!r}: want sha256:<64 lowercase hex digits>")
    return s


def looks_like_image_id(s: str) -> bool:
    """A full image ID: sha256:<64 hex> or the bare 64 hex digits."""
    return bool(_HEX64_RE.fullmatch(s)) or (s.startswith("sha256:") and bool(_HEX64_RE.fullmatch(s[7:])))


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"
                or first != first.lower()):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(ref: str, default_tag: bool = True) -> Reference:
    """Parses and normalises ref; adds the ``latest`` tag when neither tag nor digest is given
    (unless default_tag is False). Raises InvalidArgument with the reason."""
    if not isinstance(ref, str) or not ref:
        raise InvalidArgument("image reference is empty")
    if ref != ref.strip() or any(c.isspace() for c in ref):
        raise InvalidArgument(f"invalid image reference {shorten(ref)}: contains whitespace")
    rest, at, digest = ref.partition("@")
    if at and not is_digest(digest):
        raise InvalidArgument(
            f"invalid image reference {shorten(ref)}: digest {shorten(digest)} is not sha256:<64 hex>")
    tag = ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"invalid image reference {shorten(ref)}: bad tag {shorten(tag)}")
    if not rest:
        raise InvalidArgument(f"invalid image reference {shorten(ref)}: no repository name")
    if _HEX64_RE.fullmatch(rest) and not tag and not digest:
        raise InvalidArgument(
            f"invalid image reference {shorten(ref)}: a 64-hex name is an image ID, not a repository")
    domain, path = _split_domain(rest)
    if not _DOMAIN_RE.fullmatch(domain):
        raise InvalidArgument(f"invalid image reference {shorten(ref)}: bad registry host {shorten(domain)}")
    for comp in path.split("/"):
        if comp != comp.lower():
            raise InvalidArgument(
                f"invalid image reference {shorten(ref)}: repository name must be lowercase")
        if not _PATH_COMPONENT_RE.fullmatch(comp):
            raise InvalidArgument(
                f"invalid image reference {shorten(ref)}: bad repository path component {shorten(comp)}")
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidArgument(
            f"invalid image reference {shorten(ref)}: name longer than {NAME_TOTAL_LENGTH_MAX}")
    if default_tag and not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize(ref: str) -> str:
    """The canonical string form: docker.io/library/busybox:latest."""
    return str(parse(ref))
