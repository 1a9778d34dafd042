"""Error classes for runtime code (shim, container init): the project's own.

`cri_server.errors` does not import grpc, so the shim and the init raise the
same classes the daemon maps to gRPC codes. `SpecError` is kept as the name of
the base class for runtime code.
"""
from __future__ import annotations

from cri_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PycriError,
    ResourceExhausted,
    Unimplemented,
)

SpecError = PycriError

__all__ = ["FailedPrecondition", "InvalidArgument", "NotFound", "PermissionDenied",
           "ResourceExhausted", "SpecError", "Unimplemented"]
