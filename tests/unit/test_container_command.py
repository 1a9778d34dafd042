"""Command/env merging, image USER and stop-signal parsing (cri_server.containers)."""
from __future__ import annotations

import signal

import pytest

from cri_server.containers.command import DEFAULT_PATH, merge_command, merge_env
from cri_server.containers.image_config import (
    ImageView,
    cri_signal_number,
    parse_stop_signal,
    parse_user_string,
)
from pycri_common.errors import InvalidArgument


@pytest.mark.parametrize("command,args,entrypoint,cmd,expected", [
    ([], [], ["/ep"], ["c1", "c2"], ["/ep", "c1", "c2"]),          # image only
    (["/x"], [], ["/ep"], ["c1"], ["/x"]),                         # command drops CMD too
    (["/x"], ["a"], ["/ep"], ["c1"], ["/x", "a"]),
    ([], ["a", "b"], ["/ep"], ["c1"], ["/ep", "a", "b"]),          # args replace CMD
    ([], ["/bin/sh"], None, ["c1"], ["/bin/sh"]),                  # no entrypoint
    ([], [], [""], ["/bin/true"], ["/bin/true"]),                  # [""] clears ENTRYPOINT
    ([], [], None, ["sh", "-c", "x"], ["sh", "-c", "x"]),
])
def test_merge_command(command, args, entrypoint, cmd, expected):  # type: ignore[no-untyped-def]
    assert merge_command(command, args, entrypoint, cmd) == expected


def test_merge_command_nothing_to_run() -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        merge_command([], [], None, None)


def test_merge_env_later_wins_in_place() -> None:
    env = merge_env([DEFAULT_PATH], ["HOSTNAME=pod"], ["PATH=/img", "A=1", "B=2"],
                    ["B=3", "C=", "A=x=y"])
    assert env == ["PATH=/img", "HOSTNAME=pod", "A=x=y", "B=3", "C="]


def test_merge_env_rejects_nameless() -> None:
    with pytest.raises(InvalidArgument):
        merge_env(["=v"])


@pytest.mark.parametrize("text,uid,gid,user,group", [
    ("1000", 1000, None, None, None),
    ("1000:1001", 1000, 1001, None, None),
    ("www-data", None, None, "www-data", None),
    ("www-data:staff", None, None, "www-data", "staff"),
    ("app:50", None, 50, "app", None),
    ("", None, None, None, None),
])
def test_parse_user_string(text, uid, gid, user, group):  # type: ignore[no-untyped-def]
    u = parse_user_string(text)
    assert (u.uid, u.gid, u.username, u.groupname) == (uid, gid, user, group)


def test_parse_user_string_group_without_user() -> None:
    with pytest.raises(InvalidArgument):
        parse_user_string(":100")


def test_stop_signals() -> None:
    assert parse_stop_signal("") == signal.SIGTERM
    assert parse_stop_signal("SIGQUIT") == signal.SIGQUIT
    assert parse_stop_signal("int") == signal.SIGINT
    assert parse_stop_signal("9") == 9
    assert parse_stop_signal("SIGRTMIN+3") == signal.SIGRTMIN + 3
    assert cri_signal_number("SIGRTMAXMINUS2") == signal.SIGRTMAX - 2
    assert cri_signal_number("SIGUSR1") == signal.SIGUSR1
    with pytest.raises(InvalidArgument):
        parse_stop_signal("SIGNOPE")


def test_image_view_from_config() -> None:
    v = ImageView.from_config("sha256:a", "r@sha256:b", ["/l2", "/l1"], {
        "Env": ["A=1"], "Entrypoint": ["/ep"], "Cmd": None, "WorkingDir": "/w",
        "User": "1:2", "StopSignal": "SIGINT", "Volumes": {"/data": {}, "/cache": {}}})
    assert v.entrypoint == ["/ep"] and v.cmd is None and v.volumes == ["/cache", "/data"]
    assert v.user == "1:2" and v.working_dir == "/w" and v.lower_dirs == ["/l2", "/l1"]
