"""Fuzz: hosts.toml (imageservice.registry_hosts) loads or raises a PycriError, and the endpoints
of what loads are well-formed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from imageservice.registry_hosts import Endpoint, load_hosts_toml, parse_hosts_table
from pycri_common.errors import PycriError

REAL = '''server = "https://registry.k8s.io"
ca = "/etc/pycri/certs.d/registry.k8s.io/ca.crt"
skip_verify = false

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = false
  override_path = false
  [host."http://127.0.0.1:5000".header]
    x-custom = "value"

[host."https://mirror.example.com/v2/k8s"]
  capabilities = ["pull"]
  override_path = true
  ca = ["/a.crt", "/b.crt"]
  client = [["/c.crt", "/c.key"], "/d.pem"]
'''
DOCKER_HUB = '''server = "https://registry-1.docker.io"

[host."https://mirror.gcr.io"]
  capabilities = ["pull", "resolve"]
'''

_TOKENS = st.sampled_from(
    ['server = ', 'ca = ', 'client = ', 'capabilities = ', 'skip_verify = ', 'override_path = ',
     'header = ', '[host."http://127.0.0.1:5000"]', '[host."ftp://x"]', '[host.""]', '[host]',
     '[[host]]', '"https://r.example"', '"127.0.0.1:5000"', '"http://[::1"', '"http://h:abc"',
     '"https://h:99999"', '"no scheme/path"', '["pull"]',
     '["push", "nope"]', '[["/c", "/k", "/x"]]', '[1, 2]', '{a = 1}', '{}', 'true', 'false', '1',
     '1979-05-27', '"\\u00e9"', "'lit'", '"""m\nl"""', '\n', ' ', '=', '.', '#c\n', '[', ']',
     '[' * 50])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.sampled_from(["http://127.0.0.1:5000", "https://r.example/v2", "pull", "resolve", "/ca",
                       "http://[::1", "https://h:99999"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["server", "ca", "client", "capabilities", "skip_verify", "override_path",
                         "header", "host", "x", "http://m.example"]), inner, max_size=4),
    max_leaves=10)


def _check(eps: list[Endpoint]) -> None:
    for ep in eps:
        assert ep.scheme in ("http", "https") and ep.host
        assert all(isinstance(c, str) for c in ep.ca_files)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in ep.headers)
        assert isinstance(ep.skip_verify, bool)


def _endpoints(doc: dict[str, Any]) -> list[Endpoint]:
    cfg = parse_hosts_table("registry.k8s.io", doc, "hosts.toml", Path("/nonexistent"))
    assert cfg.server is not None
    return [*cfg.mirrors, cfg.server]


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.lists(_TOKENS, max_size=12).map("".join), st.text(max_size=80),
                 st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
@example(REAL)
@example(DOCKER_HUB)
@example("server = " + "[" * 100_000)
@example('[host."http://127.0.0.1:5000"]\ncapabilities = "pull"\nheader = 5\n')
def test_hosts_toml_text(text: str) -> None:
    try:
        doc = load_hosts_toml(text.encode("utf-8", "surrogatepass"), "hosts.toml")
        _check(_endpoints(doc))
    except PycriError:
        pass


@settings(max_examples=100, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["server", "ca", "client", "capabilities", "skip_verify",
                                        "override_path", "header", "host", "x"]), _VALUES,
                       max_size=5))
@example({"host": {"http://m": {"client": [[]]}}})
@example({"host": {"http://[::1": {}}})          # found: urlsplit raised ValueError
@example({"server": "https://h:abc"})
@example({"header": {"a": [1]}})
@example({"client": [[1, 2]]})
@example({"client": True})                       # found: iterated a bool (TypeError)
@example({"client": "/c.pem"})
def test_hosts_table(doc: dict[str, Any]) -> None:
    try:
        _check(_endpoints(doc))
    except PycriError:
        pass
