"""Shared pieces of the property-based fuzz tests (tests/unit/test_fuzz_*.py).

`fuzz_settings(n)`: a bounded run of n examples, no deadline (the machine is shared), no example
database left in the worktree, the failing example printed as a reproducible blob.
`mutated(samples)`: a real sample with a few mutations of the kinds that find parser bugs:
byte flips, truncation, a 8/16/24/32-bit field overwritten with a boundary value, bytes inserted,
a slice deleted or repeated.
`json_values()`: any JSON value (bounded size and depth), for documents read from outside.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

BOUNDARY_VALUES = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0xFFFFFF,
                   0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_MUTATIONS = ("flip", "truncate", "field", "insert", "delete", "repeat")


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@st.composite
def mutated(draw: st.DrawFn, samples: Sequence[bytes], max_mutations: int = 4) -> bytes:
    buf = bytearray(draw(st.sampled_from(list(samples))))
    for _ in range(draw(st.integers(0, max_mutations))):
        op = draw(st.sampled_from(_MUTATIONS))
        pos = draw(st.integers(0, len(buf))) if buf else 0
        if op == "flip" and pos < len(buf):
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del buf[pos:]
        elif op == "field":
            width = draw(st.sampled_from((1, 2, 3, 4)))
            value = draw(st.sampled_from(BOUNDARY_VALUES + (len(buf), len(buf) + 1)))
            buf[pos:pos + width] = (value & ((1 << 8 * width) - 1)).to_bytes(width, "big")
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 16))]
        elif op == "repeat":
            buf[pos:pos] = buf[pos:pos + draw(st.integers(1, 64))] * draw(st.integers(1, 4))
    return bytes(buf)


def chunked(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """data cut at the given offsets (each taken modulo its length + 1)."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@cache
def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
               | st.floats(allow_nan=False) | st.text(max_size=20))
    return st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                        | st.dictionaries(st.text(max_size=10), children, max_size=4),
                        max_leaves=max_leaves)


def json_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes from the root) in a JSON document, the root's () first."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += json_paths(v, (*prefix, i))
    return out
