"""The project's domain errors.

Every package (cri_server, runtime, imageservice, cni) raises these; the RPC
interceptor in cri_server.interceptor turns them into gRPC status codes. Raise
the most specific class with a message a person can act on.

This module imports only the standard library (the shim and the container init
share these classes and must stay light): each class names its status code in
`code_name` (a grpc.StatusCode member name), which the daemon looks up.
"""
from __future__ import annotations


class PycriError(Exception):
    """Base class. Unexpected failures that fit nothing below map to INTERNAL."""

    code_name = "INTERNAL"

    @property
    def kind(self) -> str:
        """The class name, as sent between the shim and the daemon."""
        return type(self).__name__


class InvalidArgument(PycriError):
    """The request is malformed or asks for something impossible."""

    code_name = "INVALID_ARGUMENT"


class NotFound(PycriError):
    """The named pod, container, image or handler does not exist."""

    code_name = "NOT_FOUND"


class AlreadyExists(PycriError):
    """A name or id is already taken by a different object."""

    code_name = "ALREADY_EXISTS"


class FailedPrecondition(PycriError):
    """The object is in the wrong state (e.g. exec in a stopped container)."""

    code_name = "FAILED_PRECONDITION"


class Unavailable(PycriError):
    """Temporarily unable to serve (start-up recovery, registry unreachable)."""

    code_name = "UNAVAILABLE"


class DeadlineExceeded(PycriError):
    """An operation ran out of time (stalled pull, exec timeout)."""

    code_name = "DEADLINE_EXCEEDED"


class ResourceExhausted(PycriError):
    """Out of disk space, IPs or another finite resource."""

    code_name = "RESOURCE_EXHAUSTED"


class PermissionDenied(PycriError):
    """Credentials were refused (registry auth) or an action is not allowed."""

    code_name = "PERMISSION_DENIED"


class Unimplemented(PycriError):
    """The RPC or feature is not implemented; the message names it."""

    code_name = "UNIMPLEMENTED"


class Cancelled(PycriError):
    """The client went away or cancelled the operation."""

    code_name = "CANCELLED"


def from_kind(kind: str, message: str) -> PycriError:
    """Rebuilds an error sent by name (e.g. by the shim) as the matching class."""
    cls = globals().get(kind)
    if not (isinstance(cls, type) and issubclass(cls, PycriError)):
        cls = PycriError
    return cls(message)
