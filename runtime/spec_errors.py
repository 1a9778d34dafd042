"""grpc-free error classes for runtime code that runs in the shim and the container init.

`cri_server.errors` imports grpc, which the shim and the container init must never load.
These classes carry the same names; `kind` is the cri_server.errors class name, so the shim
can send {"kind": exc.kind, "error": str(exc)} and the daemon re-raises the matching
cri_server.errors class (`to_cri_error` below does that conversion for daemon-side callers).
"""
from __future__ import annotations


class SpecError(Exception):
    """Base class; kind "PycriError" maps to INTERNAL."""

    kind = "PycriError"


class InvalidArgument(SpecError):
    kind = "InvalidArgument"


class NotFound(SpecError):
    kind = "NotFound"


class FailedPrecondition(SpecError):
    kind = "FailedPrecondition"


class PermissionDenied(SpecError):
    kind = "PermissionDenied"


class ResourceExhausted(SpecError):
    kind = "ResourceExhausted"


class Unimplemented(SpecError):
    kind = "Unimplemented"


def to_cri_error(exc: SpecError) -> Exception:
    """The cri_server.errors exception for `exc` (daemon side only: imports grpc)."""
    from cri_server import errors

    cls = getattr(errors, exc.kind, errors.PycriError)
    return cls(str(exc))
