"""The zlib dictionary of SPDY/3 header blocks (a constant of the SPDY/3 specification).

Both ends prime their header compressor and decompressor with these 1423 bytes. The
first part is a list of length-prefixed header names and values; the tail is a run of
common status lines, dates and media types.
"""
from __future__ import annotations

_WORD_TEXT = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status"
)
_WORDS = _WORD_TEXT.split()
_WORDS_AFTER_STATUS = ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
                       "keep-alive", "origin"]

_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505"
    "203 Non-Authoritative Information"
    "204 No Content"
    "301 Moved Permanently"
    "400 Bad Request"
    "401 Unauthorized"
    "403 Forbidden"
    "404 Not Found"
    "500 Internal Server Error"
    "501 Not Implemented"
    "503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,"
    "text/plain,text/javascript,public"
    "privatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)


def _length_prefixed(words: list[str]) -> bytes:
    return b"".join(len(w).to_bytes(4, "big") + w.encode("ascii") for w in words)


SPDY3_DICTIONARY: bytes = (
    _length_prefixed(_WORDS + _WORDS_AFTER_STATUS) + _TAIL.encode("ascii")
)
