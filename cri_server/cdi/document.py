"""A CDI spec file's bytes -> a plain document (dicts, lists, strings, numbers), bounded.

JSON goes through pycri_common.bounded_json. YAML is parsed with PyYAML's safe loader (only
plain data types), further restricted against hostile files: anchors and aliases are refused
(an alias "bomb" expands a small file into an exponentially large document; CDI specs written
by tools never use them), nesting is limited like JSON's, and so are the file's size and its
number of nodes. Pure: the caller reads the file.
"""
from __future__ import annotations

from typing import Any

import yaml

from pycri_common.bounded_json import MAX_JSON_DEPTH, load_json
from pycri_common.errors import InvalidArgument

MAX_SPEC_BYTES = 4 * 1024 * 1024     # nvidia-ctk specs of big nodes are ~100 KiB
MAX_DEPTH = MAX_JSON_DEPTH
MAX_NODES = 200_000


class _BoundedSafeLoader(yaml.SafeLoader):
    """SafeLoader that composes no alias, anchor or merge key, and bounds depth and nodes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            raise yaml.YAMLError(f"anchors and aliases are not allowed (alias at line {line})")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            line = event.start_mark.line + 1
            raise yaml.YAMLError(f"anchors and aliases are not allowed (anchor at line {line})")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES} nodes")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nests deeper than {MAX_DEPTH} levels (the limit)")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: Any) -> None:
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise yaml.YAMLError("merge keys ('<<') are not allowed")
        super().flatten_mapping(node)


def is_spec_file(name: str) -> bool:
    return name.endswith((".json", ".yaml")) and not name.startswith(".")


def load_document(data: bytes, what: str) -> Any:
    """The parsed document of a `.json` or `.yaml` spec named `what`; InvalidArgument saying
    why it cannot be read."""
    if len(data) > MAX_SPEC_BYTES:
        raise InvalidArgument(f"{what} is larger than {MAX_SPEC_BYTES} bytes")
    if what.endswith(".json"):
        return load_json(data, what, max_bytes=MAX_SPEC_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"{what} is not UTF-8 text: {e}") from None
    try:
        loader = _BoundedSafeLoader(text)  # the reader checks the characters here
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{what} is not a usable YAML document: {_yaml_message(e)}") from None
    try:
        docs = []
        while loader.check_data():
            docs.append(loader.get_data())
            if len(docs) > 1:
                raise InvalidArgument(f"{what} holds more than one YAML document")
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{what} is not a usable YAML document: {_yaml_message(e)}") from None
    except RecursionError:
        raise InvalidArgument(f"{what} nests too deeply") from None
    finally:
        loader.dispose()
    return docs[0] if docs else None


def _yaml_message(e: yaml.YAMLError) -> str:
    text = " ".join(str(e).split())
    return text[:300]
