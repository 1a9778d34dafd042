"""Files named from outside are opened without blocking and read with a bound."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pycri_common.errors import InvalidArgument
from pycri_common.outside_files import open_regular_file, read_regular_file


def test_regular_file_is_read(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_bytes(b"x" * 100)
    assert read_regular_file(f, 100, "seccomp profile") == b"x" * 100
    fd = open_regular_file(f, "seccomp profile")
    try:
        assert os.read(fd, 3) == b"xxx"
        assert os.get_blocking(fd)   # O_NONBLOCK was only for the open
    finally:
        os.close(fd)


def test_fifo_is_refused_at_once_without_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "profile.json"
    os.mkfifo(fifo)
    # a blocking open() of a FIFO without a writer never returns: this test would hang
    with pytest.raises(InvalidArgument, match=r"profile\.json: is a FIFO, not a regular file"):
        read_regular_file(fifo, 1024, "seccomp profile")


@pytest.mark.parametrize("kind", ["directory", "socket", "device"])
def test_other_kinds_are_refused_naming_the_kind(tmp_path: Path, kind: str) -> None:
    if kind == "directory":
        path, want = tmp_path, "a directory"
    elif kind == "socket":
        path, want = tmp_path / "s.sock", "No such device"   # open() of a socket: ENXIO
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
    else:
        path, want = Path("/dev/null"), "a character device"
    with pytest.raises(InvalidArgument, match=f"registry CA file {path}: .*{want}"):
        open_regular_file(path, "registry CA file")


def test_size_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"x" * 101)
    with pytest.raises(InvalidArgument, match=r"big: larger than 100 bytes"):
        read_regular_file(f, 100, "docker config")


def test_missing_file_and_symlink_with_nofollow(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"hosts file .*/nope: No such file"):
        read_regular_file(tmp_path / "nope", 10, "hosts file")
    target = tmp_path / "t"
    target.write_text("ok")
    link = tmp_path / "l"
    link.symlink_to(target)
    assert read_regular_file(link, 10, "f") == b"ok"
    with pytest.raises(InvalidArgument, match="is a symlink"):
        read_regular_file(link, 10, "f", nofollow=True)
