"""Resolve the container user (uid, gid, supplemental groups) from the rootfs /etc/passwd and
/etc/group, as runc/containerd do.

Rules:
- username: looked up in passwd (missing -> InvalidArgument); uid and primary gid from it.
- uid: used as is; primary gid from the passwd entry with that uid, else 0.
- gid / groupname: overrides the primary gid (groupname looked up in /etc/group).
- groups: [primary gid] + (Merge only) every /etc/group entry listing the user's name
  + supplemental_groups from the request; duplicates removed, order kept.
Missing passwd/group files count as empty.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycri_common.errors import InvalidArgument
from runtime.container_spec import UserSpec


@dataclass
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = "/"


@dataclass
class GroupEntry:
    name: str
    gid: int
    members: list[str] = field(default_factory=list)


@dataclass
class ResolvedUser:
    uid: int
    gid: int
    groups: list[int]
    username: str | None
    home: str

    def as_report(self) -> dict[str, Any]:
        return {"uid": self.uid, "gid": self.gid, "groups": list(self.groups)}


def parse_passwd(text: str) -> list[PasswdEntry]:
    out: list[PasswdEntry] = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            out.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]),
                                   parts[5] if len(parts) > 5 and parts[5] else "/"))
        except ValueError:
            continue
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out: list[GroupEntry] = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) < 3 or line.startswith("#"):
            continue
        try:
            gid = int(parts[2])
        except ValueError:
            continue
        members = [m for m in (parts[3].split(",") if len(parts) > 3 else []) if m]
        out.append(GroupEntry(parts[0], gid, members))
    return out


def resolve_user(user: UserSpec, passwd_text: str, group_text: str) -> ResolvedUser:
    """Resolve a ContainerSpec process.user against passwd/group file contents."""
    passwd = parse_passwd(passwd_text)
    groups = parse_group(group_text)
    entry: PasswdEntry | None = None
    if user.username is not None:
        name = user.username
        entry = next((p for p in passwd if p.name == name), None)
        if entry is None:
            if name.isdigit():  # "1000" given as a name: treat as uid like runc
                uid = int(name)
                entry = next((p for p in passwd if p.uid == uid), None)
            else:
                raise InvalidArgument(f"process.user.username: no user {name!r} in the "
                                      "image's /etc/passwd")
            if entry is None:
                entry = PasswdEntry(name, uid, 0)
        uid = entry.uid
    else:
        uid = user.uid or 0
        entry = next((p for p in passwd if p.uid == uid), None)
    gid = entry.gid if entry is not None else 0
    if user.groupname is not None:
        gname = user.groupname
        gent = next((g for g in groups if g.name == gname), None)
        if gent is None:
            if not gname.isdigit():
                raise InvalidArgument(f"process.user.groupname: no group {gname!r} in the "
                                      "image's /etc/group")
            gid = int(gname)
        else:
            gid = gent.gid
    elif user.gid is not None:
        gid = user.gid
    result = [gid]
    if user.policy == "Merge" and entry is not None:
        result += [g.gid for g in groups if entry.name in g.members]
    result += list(user.supplemental_groups)
    seen: set[int] = set()
    uniq = [g for g in result if not (g in seen or seen.add(g))]  # type: ignore[func-returns-value]
    return ResolvedUser(uid, gid, uniq, entry.name if entry else None,
                        entry.home if entry else "/")


def read_text(path: str) -> str:
    """File contents, or '' if it does not exist/unreadable (images without /etc/passwd)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
