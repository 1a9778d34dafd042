"""The parts of an image the container code needs, and parsing of the image's USER.

`ImageView` is built from whatever the image manager returns (see
`ContainerManager._image_view`); keeping it small lets the spec builder be
tested without an image store.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

from pycri_common.errors import InvalidArgument


@dataclass
class ImageView:
    id: str                                   # config digest "sha256:..."
    repo_digest: str = ""                     # "name@sha256:..." (image_ref)
    lower_dirs: list[str] = field(default_factory=list)  # snapshot dirs, top layer first
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    volumes: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, image_id: str, repo_digest: str, lower_dirs: list[str],
                    config: dict[str, Any]) -> ImageView:
        """config: the OCI image config's "config" object (Env, Entrypoint, Cmd, ...)."""
        c = config or {}
        return cls(id=image_id, repo_digest=repo_digest, lower_dirs=list(lower_dirs),
                   env=list(c.get("Env") or []),
                   entrypoint=None if c.get("Entrypoint") is None else list(c["Entrypoint"]),
                   cmd=None if c.get("Cmd") is None else list(c["Cmd"]),
                   working_dir=c.get("WorkingDir") or "", user=c.get("User") or "",
                   stop_signal=c.get("StopSignal") or "",
                   volumes=sorted((c.get("Volumes") or {}).keys()))


@dataclass
class UserSpec:
    uid: int | None = None
    gid: int | None = None
    username: str | None = None
    groupname: str | None = None


def parse_user_string(value: str) -> UserSpec:
    """Docker's USER syntax: "name", "uid", "uid:gid", "name:group", "uid:group", "name:gid"."""
    user, _, group = value.partition(":")
    if not user:
        if group:
            raise InvalidArgument(f"user {value!r} names a group but no user")
        return UserSpec()
    out = UserSpec()
    if user.isdigit():
        out.uid = int(user)
    else:
        out.username = user
    if group:
        if group.isdigit():
            out.gid = int(group)
        else:
            out.groupname = group
    for part in (out.username, out.groupname):
        if part is not None and ("\n" in part or "/" in part):
            raise InvalidArgument(f"user {value!r} is not a valid user[:group]")
    return out


def parse_stop_signal(name: str) -> int:
    """Image StopSignal ("SIGTERM", "TERM", "15", "SIGRTMIN+3") -> signal number."""
    text = name.strip().upper()
    if not text:
        return int(signal.SIGTERM)
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    if text.startswith(("SIGRTMIN", "SIGRTMAX")):
        base = signal.SIGRTMIN if text.startswith("SIGRTMIN") else signal.SIGRTMAX
        rest = text[8:]
        try:
            offset = int(rest) if rest else 0
        except ValueError:
            raise InvalidArgument(f"unknown stop signal {name!r}") from None
        return int(base) + offset
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise InvalidArgument(f"unknown stop signal {name!r}") from None


def cri_signal_number(enum_name: str) -> int:
    """CRI Signal enum name (e.g. "SIGRTMINPLUS3", "SIGRTMAXMINUS2") -> signal number."""
    if enum_name.startswith("SIGRTMINPLUS"):
        return int(signal.SIGRTMIN) + int(enum_name[len("SIGRTMINPLUS"):])
    if enum_name.startswith("SIGRTMAXMINUS"):
        return int(signal.SIGRTMAX) - int(enum_name[len("SIGRTMAXMINUS"):])
    aliases = {"SIGCLD": "SIGCHLD", "SIGPOLL": "SIGIO", "SIGIOT": "SIGABRT"}
    return parse_stop_signal(aliases.get(enum_name, enum_name))
