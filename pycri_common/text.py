"""Client-supplied values as they may appear in messages and log lines: cut to a short prefix.

An id, image reference, name or path a client sends can be megabytes long; echoed in full it
makes a log line of that size, and in a gRPC status message it overflows the client's metadata
limit (the client then sees RESOURCE_EXHAUSTED instead of the real answer).
"""
from __future__ import annotations

# Long enough for a 64-hex id, a typical image reference or path; the rest is counted.
DEFAULT_LIMIT = 100


def shorten(value: str | bytes, limit: int = DEFAULT_LIMIT) -> str:
    """repr(value) when it has at most `limit` characters; else the repr of its first `limit`
    characters followed by "… (N bytes)" with the full length."""
    if len(value) <= limit:
        return repr(value)
    size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else len(value)
    return f"{value[:limit]!r}… ({size} bytes)"


def clip(text: str, limit: int) -> str:
    """text itself when it has at most `limit` characters; else its first `limit` characters
    and a note of how much was cut (for messages built from several parts)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters cut)"
