"""The project's domain errors, and the one place that maps them to gRPC codes.

Every package (cri_server, runtime, imageservice, cni) raises these; the RPC
interceptor in cri_server.interceptor turns them into gRPC status codes. Raise
the most specific class with a message a person can act on.
"""
from __future__ import annotations

import grpc


class PycriError(Exception):
    """Base class. Unexpected failures that fit nothing below map to INTERNAL."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(PycriError):
    """The request is malformed or asks for something impossible."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PycriError):
    """The named pod, container, image or handler does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PycriError):
    """A name or id is already taken by a different object."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(PycriError):
    """The object is in the wrong state (e.g. exec in a stopped container)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(PycriError):
    """Temporarily unable to serve (start-up recovery, registry unreachable)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PycriError):
    """An operation ran out of time (stalled pull, exec timeout)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(PycriError):
    """Out of disk space, IPs or another finite resource."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(PycriError):
    """Credentials were refused (registry auth) or an action is not allowed."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(PycriError):
    """The RPC or feature is not implemented; the message names it."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(PycriError):
    """The client went away or cancelled the operation."""

    code = grpc.StatusCode.CANCELLED


def grpc_code_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code an exception is reported with."""
    if isinstance(exc, PycriError):
        return exc.code
    return grpc.StatusCode.INTERNAL
