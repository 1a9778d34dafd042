"""Command and environment merging, as Docker and Kubernetes define them.

- command (Kubernetes `command`) replaces the image ENTRYPOINT and drops its CMD;
- args (Kubernetes `args`) replace the image CMD;
- neither: ENTRYPOINT + CMD.
An ENTRYPOINT of [""] counts as none (Docker's way of clearing it).
Environment: a default PATH, HOSTNAME, then the image's, then the request's; a
later value for a key replaces the earlier one in place.
"""
from __future__ import annotations

from collections.abc import Iterable

from pycri_common.errors import InvalidArgument

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def merge_command(command: list[str], args: list[str], entrypoint: list[str] | None,
                  cmd: list[str] | None) -> list[str]:
    if command:
        argv = list(command) + list(args)
    else:
        head = [] if entrypoint is None or entrypoint == [""] else list(entrypoint)
        argv = head + (list(args) if args else list(cmd or []))
    if not argv or argv[0] == "":
        raise InvalidArgument("no command specified: the request has no command/args and the "
                              "image has no ENTRYPOINT/CMD")
    check_argv(argv, "command")
    return argv


def check_argv(argv: Iterable[str], what: str) -> None:
    """InvalidArgument for an argument execve(2) cannot take (an embedded NUL byte)."""
    for arg in argv:
        if "\0" in arg:
            raise InvalidArgument(f"{what} argument {arg!r} contains a NUL byte")


def merge_env(*layers: Iterable[str]) -> list[str]:
    """Merges KEY=VALUE lists; later layers override earlier keys, keeping first position."""
    order: list[str] = []
    values: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key, sep, _ = item.partition("=")
            if not key:
                raise InvalidArgument(f"environment entry {item!r} has no name")
            if "\0" in item:
                raise InvalidArgument(f"environment entry {key!r} contains a NUL byte")
            if key not in values:
                order.append(key)
            values[key] = item if sep else f"{key}="
    return [values[k] for k in order]
