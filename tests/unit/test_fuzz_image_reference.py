"""Fuzz: image references (imageservice.reference) parse or raise a PycriError, and what parses
is canonical ASCII that parses again to the same reference."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from imageservice.reference import is_digest, looks_like_image_id, parse
from pycri_common.errors import PycriError

HEX = "0123456789abcdef"
_ALPHABET = st.sampled_from(list("abcz09AZ._-/:@[]") + ["\n", " ", "é", "٣", "\x00"])
_PART = st.text(alphabet=st.sampled_from(list("abz09._-")), min_size=1, max_size=12)
_DIGEST = st.text(alphabet=st.sampled_from(list(HEX)), min_size=64, max_size=64).map(
    lambda h: "sha256:" + h)


@st.composite
def _structured(draw: st.DrawFn) -> str:
    """Mostly well-formed references with a twist here and there."""
    ref = ""
    if draw(st.booleans()):
        ref += draw(st.sampled_from(["docker.io", "127.0.0.1:5000", "[::1]:5000", "localhost",
                                     "registry.k8s.io", "Host.Example", "index.docker.io"])) + "/"
    ref += "/".join(draw(st.lists(_PART, min_size=1, max_size=4)))
    if draw(st.booleans()):
        ref += ":" + draw(st.text(alphabet=_ALPHABET, min_size=0, max_size=10))
    if draw(st.booleans()):
        ref += "@" + draw(st.one_of(_DIGEST, _DIGEST.map(lambda d: d + "\n"),
                                    st.text(alphabet=_ALPHABET, max_size=20)))
    return ref


_REFS = st.one_of(st.text(alphabet=_ALPHABET, max_size=60), _structured(), st.text(max_size=40))


@settings(max_examples=200, deadline=None, database=None)
@given(_REFS)
@example("busybox")
@example("registry.k8s.io/pause:3.9")
@example("docker.io/library/busybox:1.36@sha256:" + "a" * 64)
@example("127.0.0.1:5000/ctr/busybox:v1")
@example("index.docker.io/library/ubuntu:22.04")
@example("busybox:tag\u00e9")                       # \w in Python regexes is not ASCII-only
@example("busybox@sha256:" + "a" * 64 + "\n")     # $ matches before a final newline
@example("a" * 300)
def test_reference(ref: str) -> None:
    try:
        r = parse(ref)
    except PycriError:
        return
    text = str(r)
    assert text.isascii() and not any(c.isspace() for c in text), text
    assert parse(text) == r
    assert r.object in (r.digest, r.tag)


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(_DIGEST, _DIGEST.map(lambda d: d + "\n"), st.text(max_size=80)))
@example("sha256:" + "0" * 64 + "\n")
def test_digest_and_image_id(s: str) -> None:
    if is_digest(s):
        assert s.isascii() and s == s.strip() and len(s) in (71, 103, 135)
    if looks_like_image_id(s):
        assert s.isascii() and s == s.strip() and len(s) in (64, 71)
