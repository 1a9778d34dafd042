"""securejoin-style resolver and user/group resolution (pure, on temp dirs)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri_common.errors import InvalidArgument
from runtime.container_spec import UserSpec
from runtime.securejoin import (
    ensure_file_in_root,
    mkdir_all_in_root,
    open_parent_in_root,
    open_path_in_root,
    relative_in_root,
    secure_join,
)
from runtime.users import parse_group, parse_passwd, resolve_user

PASSWD = """root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
broken line
"""
GROUP = """root:x:0:
alice:x:1000:
bob:x:1001:
staff:x:50:alice,bob
audio:x:29:alice
weird:x:notanumber:alice
"""


@pytest.fixture
def root(tmp_path: Path) -> str:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc/passwd").write_text("x")
    (r / "a/b").mkdir(parents=True)
    os.symlink("/etc", r / "abs")
    os.symlink("../../../../../../", r / "a/up")
    os.symlink("/../../etc/passwd", r / "pw")
    os.symlink("loop2", r / "loop1")
    os.symlink("loop1", r / "loop2")
    os.symlink("b", r / "a/rel")
    (tmp_path / "outside").mkdir()
    return str(r)


@pytest.mark.parametrize(("unsafe", "want"), [
    ("/", ""), ("", ""), ("..", ""), ("/../../..", ""),
    ("/etc/passwd", "/etc/passwd"),
    ("/abs/passwd", "/etc/passwd"),          # absolute symlink restarts at root
    ("/a/up/outside", "/outside"),           # .. in a symlink stops at root
    ("/pw", "/etc/passwd"),
    ("a/rel/c", "/a/b/c"),                   # relative symlink, missing tail kept
    ("/a/./b/../b//x", "/a/b/x"),
    ("/missing/../etc", "/etc"),
])
def test_secure_join(root: str, unsafe: str, want: str) -> None:
    assert secure_join(root, unsafe) == root + want


def test_secure_join_loop(root: str) -> None:
    with pytest.raises(InvalidArgument, match="symbolic links"):
        secure_join(root, "/loop1/x")


def test_relative_in_root(root: str) -> None:
    assert relative_in_root(root, root) == "/"
    assert relative_in_root(root, root + "/a/b") == "/a/b"
    with pytest.raises(InvalidArgument):
        relative_in_root(root, root + "x/y")


def test_mkdir_all_follows_symlinks_inside(root: str, tmp_path: Path) -> None:
    got = mkdir_all_in_root(root, "/a/up/new/dir")
    assert got == root + "/new/dir" and os.path.isdir(got)
    assert not (tmp_path / "new").exists()
    got = mkdir_all_in_root(root, "/abs/x")
    assert got == root + "/etc/x"


def test_mkdir_all_refuses_file_component(root: str) -> None:
    with pytest.raises(InvalidArgument, match="not a directory"):
        mkdir_all_in_root(root, "/etc/passwd/sub")


def test_ensure_file(root: str) -> None:
    got = ensure_file_in_root(root, "/abs/hosts")
    assert got == root + "/etc/hosts" and os.path.isfile(got)
    assert ensure_file_in_root(root, "/etc/passwd") == root + "/etc/passwd"
    with pytest.raises(InvalidArgument, match="is a directory"):
        ensure_file_in_root(root, "/a")


@pytest.mark.parametrize("make", ["dir", "file"])
def test_a_component_swapped_for_a_symlink_while_creating_stays_inside(
        root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: str) -> None:
    """The container swaps /a/b for a symlink to the host right before the entry is created
    (e.g. through a volume it shares with a running container): nothing may appear outside."""
    outside = tmp_path / "host-dir"
    outside.mkdir()
    real_mkdir, real_open = os.mkdir, os.open
    swapped: list[bool] = []

    def swap() -> None:
        if not swapped:
            swapped.append(True)
            os.rename(os.path.join(root, "a/b"), os.path.join(root, "a/b-moved"))
            os.symlink(str(outside), os.path.join(root, "a/b"))

    def mkdir(path: str, *args: object, **kw: object) -> None:
        swap()
        real_mkdir(path, *args, **kw)  # type: ignore[arg-type]

    def open_(path: str, flags: int, *args: object, **kw: object) -> int:
        if flags & os.O_CREAT:
            swap()
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    if make == "dir":
        target = mkdir_all_in_root(root, "/a/b/new/leaf")
        made = "a/b-moved/new/leaf"
    else:
        target = ensure_file_in_root(root, "/a/b/leaf")
        made = "a/b-moved/leaf"
    monkeypatch.undo()
    assert swapped and os.listdir(outside) == []
    assert os.path.exists(os.path.join(root, made))   # made in the directory that was checked
    with pytest.raises(InvalidArgument):   # and a mount on the returned path is refused
        open_path_in_root(root, target)


def test_open_parent_in_root_creates_parents(root: str) -> None:
    fd, name, target = open_parent_in_root(root, "/abs/sub/dev0")
    try:
        assert (name, target) == ("dev0", root + "/etc/sub/dev0")
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
    finally:
        os.close(fd)
    assert os.path.isfile(root + "/etc/sub/dev0")
    with pytest.raises(InvalidArgument, match="cannot replace the root"):
        open_parent_in_root(root, "/a/up")


def test_open_path_in_root_checks_real_path(root: str) -> None:
    fd = open_path_in_root(root, root + "/etc/passwd")
    os.close(fd)
    with pytest.raises(InvalidArgument):
        open_path_in_root(root, root + "/abs")  # a symlink itself is refused (O_NOFOLLOW)


def test_parse_files() -> None:
    assert [p.name for p in parse_passwd(PASSWD)] == ["root", "alice", "bob"]
    groups = parse_group(GROUP)
    assert [g.name for g in groups] == ["root", "alice", "bob", "staff", "audio"]
    assert groups[3].members == ["alice", "bob"]


def user(**kw: object) -> UserSpec:
    base: dict[str, object] = {"uid": None, "gid": None, "username": None, "groupname": None,
                               "supplemental_groups": [], "policy": "Merge"}
    base.update(kw)
    return UserSpec.from_json(base)


def test_username_merge() -> None:
    r = resolve_user(user(username="alice", supplemental_groups=[7, 50]), PASSWD, GROUP)
    assert (r.uid, r.gid, r.groups, r.home) == (1000, 1000, [1000, 50, 29, 7], "/home/alice")


def test_uid_strict() -> None:
    r = resolve_user(user(uid=1000, supplemental_groups=[7], policy="Strict"), PASSWD, GROUP)
    assert (r.uid, r.gid, r.groups) == (1000, 1000, [1000, 7])


def test_uid_unknown_gets_gid_0() -> None:
    r = resolve_user(user(uid=4242), PASSWD, GROUP)
    assert (r.uid, r.gid, r.groups, r.username) == (4242, 0, [0], None)


def test_gid_and_groupname_override() -> None:
    assert resolve_user(user(uid=1000, gid=5), PASSWD, GROUP).gid == 5
    assert resolve_user(user(username="bob", groupname="staff"), PASSWD, GROUP).gid == 50


def test_default_is_root() -> None:
    r = resolve_user(user(), PASSWD, GROUP)
    assert (r.uid, r.gid, r.groups, r.username) == (0, 0, [0], "root")


def test_numeric_username_is_uid() -> None:
    assert resolve_user(user(username="1001"), PASSWD, GROUP).uid == 1001


def test_unknown_names_are_errors() -> None:
    with pytest.raises(InvalidArgument, match="no user 'mallory'"):
        resolve_user(user(username="mallory"), PASSWD, GROUP)
    with pytest.raises(InvalidArgument, match="no group 'nogroup'"):
        resolve_user(user(uid=0, groupname="nogroup"), PASSWD, GROUP)


def test_missing_files_are_empty() -> None:
    r = resolve_user(user(uid=5, supplemental_groups=[9]), "", "")
    assert (r.uid, r.gid, r.groups) == (5, 0, [0, 9])
