"""Parsing JSON that comes from outside (registries, archives, profiles, plugins) with bounds.

json.loads recurses once per nesting level: ``[`` x 100000 raises RecursionError (an INTERNAL
error with a traceback) and a few thousand levels of valid JSON survive the parse only to break
whatever walks the result later. ``load_json`` refuses, before json.loads runs, a document
larger than ``max_bytes`` or nested deeper than ``max_depth`` arrays/objects (default
MAX_JSON_DEPTH = 64: manifests, image configs, seccomp profiles and CNI results nest 4 to 6
deep; 64 leaves room for any real document and stays far below the interpreter's recursion
limit). Errors are InvalidArgument (or the class the caller names) naming the document.

The depth check is a cheap scan at C speed: strings are cut out (honouring backslash escapes),
everything but brackets is deleted, then the innermost ``[]`` pairs are removed one level per
pass; the number of passes is the depth. At most max_depth + 1 passes run, so the cost is
bounded by max_depth x size.
"""
from __future__ import annotations

import json
import re
from typing import Any

from pycri_common.errors import InvalidArgument, PycriError

MAX_JSON_DEPTH = 64
DEFAULT_MAX_BYTES = 4 * 1024 * 1024

# a JSON string; the closing quote is optional so an unterminated one cannot make the scan
# quadratic (the document is invalid then, and json.loads says so)
_STRING_RE = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*"?')
_BRACKETS = b"[]{}"
_KEEP = bytes.maketrans(b"{}", b"[]")
_DROP = bytes(b for b in range(256) if b not in _BRACKETS)


def nesting_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than max_depth (UTF-8 input)."""
    s = _STRING_RE.sub(b"", data).translate(_KEEP, _DROP)
    if s.count(b"[") <= max_depth:
        return False
    passes = 0
    while b"[]" in s:
        passes += 1
        if passes > max_depth:
            return True
        s = s.replace(b"[]", b"")
    # what is left is unbalanced (invalid JSON): unclosed "[" still make json.loads recurse
    return passes + s.count(b"[") > max_depth


def load_json(data: bytes | str, what: str, max_bytes: int = DEFAULT_MAX_BYTES,
              max_depth: int = MAX_JSON_DEPTH,
              error: type[PycriError] = InvalidArgument) -> Any:
    """The parsed document; `error` (InvalidArgument by default) naming `what` when it is too
    large, too deeply nested, not UTF-8 or not JSON."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{what} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} is not UTF-8 text: {e}") from None
    if nesting_depth_exceeds(raw, max_depth):
        raise error(f"{what} nests arrays/objects deeper than {max_depth} levels (the limit)")
    try:
        return json.loads(text)
    except ValueError as e:
        raise error(f"{what} is not valid JSON: {e}") from None
