"""Property-based tests of CDI parsing: any document, name or file text ends in a Spec or an
InvalidArgument, never another exception (cri_server.cdi)."""
from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cri_server.cdi import document, names, spec
from pycri_common.errors import InvalidArgument
from tests.support.fuzz import json_paths

SAMPLE: dict[str, Any] = {
    "cdiVersion": "0.7.0", "kind": "vendor.com/gpu", "annotations": {"a": "b"},
    "containerEdits": {"env": ["A=1"], "hooks": [{"hookName": "createContainer",
                                                  "path": "/bin/h", "args": ["h"],
                                                  "timeout": 3}]},
    "devices": [{"name": "gpu0", "containerEdits": {
        "deviceNodes": [{"path": "/dev/g0", "hostPath": "/dev/g0", "type": "c", "major": 195,
                         "minor": 0, "fileMode": 438, "permissions": "rw", "uid": 0,
                         "gid": 0}],
        "mounts": [{"hostPath": "/usr/lib/x", "containerPath": "/usr/lib/x",
                    "options": ["ro", "bind"], "type": "bind"}],
        "additionalGids": [44], "intelRdt": {"closID": "c"}}}],
}

scalars = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=20)


PATHS = json_paths(SAMPLE)[1:]


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    target = doc
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = copy.deepcopy(value)
    return doc


def _parse(doc: Any) -> None:
    try:
        spec.parse_spec(doc, "/etc/cdi/f.json")
    except InvalidArgument:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PATHS), json_values)
def test_mutated_sample_parses_or_is_invalid(path: tuple[Any, ...], value: Any) -> None:
    _parse(_replace(SAMPLE, path, value))


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_document_parses_or_is_invalid(doc: Any) -> None:
    _parse(doc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@example(b"a: &x [1]\nb: *x\n")
@example(b"!!python/name:os.system\n")
@example(b"- " * 200)
@example(json.dumps(SAMPLE).encode())
def test_any_file_text_loads_or_is_invalid(data: bytes) -> None:
    for name in ("f.yaml", "f.json"):
        try:
            _parse(document.load_document(data, name))
        except InvalidArgument:
            pass


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab.-_:=/9 Z", max_size=30))
def test_names_parse_or_are_invalid_and_round_trip(text: str) -> None:
    try:
        q = names.parse_qualified(text)
    except InvalidArgument:
        return
    assert str(q) == text
    assert names.parse_qualified(str(q)) == q
