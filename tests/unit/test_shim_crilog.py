"""CRI log writer: format, partial lines, long-line splitting, reopen, never through symlinks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime.shim.crilog import MAX_LINE, CriLogWriter, open_log_file, rfc3339nano

T0 = 1_795_000_000_123_456_789  # 2026-11-18T...


def lines(path: Path) -> list[list[str]]:
    return [ln.split(" ", 3) for ln in path.read_text().splitlines()]


def writer(tmp_path: Path, **kw: object) -> tuple[CriLogWriter, Path]:
    path = tmp_path / "logs" / "c.log"
    return CriLogWriter(str(path), clock=lambda: T0, **kw), path  # type: ignore[arg-type]


def test_rfc3339nano_matches_go_format() -> None:
    assert rfc3339nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339nano(1_500_000_000) == "1970-01-01T00:00:01.5Z"
    assert rfc3339nano(T0).endswith(".123456789Z")
    assert rfc3339nano(10_000_000_010) == "1970-01-01T00:00:10.00000001Z"


def test_full_lines_per_stream(tmp_path: Path) -> None:
    w, path = writer(tmp_path)
    w.write("stdout", b"one\ntwo\n")
    w.write("stderr", b"bad\n")
    assert lines(path) == [[rfc3339nano(T0), "stdout", "F", "one"],
                           [rfc3339nano(T0), "stdout", "F", "two"],
                           [rfc3339nano(T0), "stderr", "F", "bad"]]


def test_partial_line_is_written_at_once_as_p_and_ended_by_newline_or_flush(
        tmp_path: Path) -> None:
    """Nothing read is held (a shim killed with -9 must not lose it): an unterminated chunk
    is a P record at once, its line ends with the next newline or flush()."""
    w, path = writer(tmp_path)
    w.write("stdout", b"hel")
    assert [(ln[2], ln[3]) for ln in lines(path)] == [("P", "hel")]
    w.write("stdout", b"lo\nwor")
    assert [(ln[2], ln[3]) for ln in lines(path)] == [("P", "hel"), ("F", "lo"), ("P", "wor")]
    w.flush("stdout")
    assert [(ln[2], ln[3] if len(ln) > 3 else "") for ln in lines(path)][3:] == [("F", "")]
    w.flush("stdout")  # nothing open: nothing more
    assert len(lines(path)) == 4


def test_a_lone_cr_is_held_for_crlf(tmp_path: Path) -> None:
    w, path = writer(tmp_path)
    w.write("stdout", b"ab\r")
    w.write("stdout", b"\ncd\r")
    w.flush("stdout")
    assert path.read_bytes().decode().split("\n") == [
        f"{rfc3339nano(T0)} stdout P ab", f"{rfc3339nano(T0)} stdout F ",
        f"{rfc3339nano(T0)} stdout P cd", f"{rfc3339nano(T0)} stdout F \r", ""]


def test_crlf_loses_cr_and_empty_lines_are_kept(tmp_path: Path) -> None:
    w, path = writer(tmp_path)
    w.write("stdout", b"a\r\n\nb\n")
    assert path.read_text().splitlines() == [f"{rfc3339nano(T0)} stdout F a",
                                             f"{rfc3339nano(T0)} stdout F ",
                                             f"{rfc3339nano(T0)} stdout F b"]


def test_long_line_split_into_partials_at_16k(tmp_path: Path) -> None:
    assert MAX_LINE == 16384
    w, path = writer(tmp_path)
    data = b"x" * (MAX_LINE * 2 + 10)
    w.write("stdout", data[:5000])
    w.write("stdout", data[5000:] + b"\n")
    got = lines(path)
    assert [ln[2] for ln in got] == ["P", "P", "F"]  # the first chunk at once
    assert [len(ln[3]) for ln in got] == [5000, MAX_LINE, len(data) - 5000 - MAX_LINE]
    assert "".join(ln[3] for ln in got).encode() == data


def test_line_of_exactly_max_is_one_full_line(tmp_path: Path) -> None:
    w, path = writer(tmp_path, max_line=8)
    w.write("stdout", b"12345678\n123456789\n")
    assert [(ln[2], ln[3]) for ln in lines(path)] == [("F", "12345678"), ("P", "12345678"),
                                                       ("F", "9")]


def test_reopen_after_rename_writes_to_new_file(tmp_path: Path) -> None:
    w, path = writer(tmp_path)
    w.write("stdout", b"before\n")
    rotated = tmp_path / "logs" / "c.log.1"
    os.rename(path, rotated)
    w.write("stdout", b"still old\n")
    w.reopen()
    w.write("stdout", b"after\n")
    assert [ln[3] for ln in lines(rotated)] == ["before", "still old"]
    assert [ln[3] for ln in lines(path)] == ["after"]
    w.close()


def test_binary_bytes_pass_through(tmp_path: Path) -> None:
    w, path = writer(tmp_path)
    w.write("stderr", b"\xff\x00z\n")
    assert path.read_bytes().endswith(b" stderr F \xff\x00z\n")


def test_log_file_symlink_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("keep\n")
    log_dir = tmp_path / "pod"
    log_dir.mkdir()
    (log_dir / "c.log").symlink_to(victim)
    with pytest.raises(InvalidArgument, match=r"c\.log is a symlink") as exc:
        CriLogWriter(str(log_dir / "c.log"), log_dir=str(log_dir))
    assert exc.value.kind == "InvalidArgument"
    (log_dir / "d.log").symlink_to(tmp_path / "missing")  # dangling: not created through
    with pytest.raises(InvalidArgument, match="symlink"):
        open_log_file(str(log_dir / "d.log"), str(log_dir))
    assert victim.read_text() == "keep\n" and not (tmp_path / "missing").exists()


def test_symlinked_sub_directory_is_refused_and_nothing_made_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    log_dir = tmp_path / "pod"
    (log_dir / "a").mkdir(parents=True)
    (log_dir / "a" / "b").symlink_to(outside)
    with pytest.raises(InvalidArgument, match=f"{log_dir}/a/b is a symlink"):
        open_log_file(str(log_dir / "a/b/c/0.log"), str(log_dir))
    assert list(outside.iterdir()) == []


def test_missing_directories_are_made_and_the_log_directory_itself_may_be_a_symlink(
        tmp_path: Path) -> None:
    real = tmp_path / "disk" / "pod"
    real.mkdir(parents=True)
    (tmp_path / "pod").symlink_to(real)
    fd = open_log_file(str(tmp_path / "pod/a/b/0.log"), str(tmp_path / "pod"))
    os.write(fd, b"x")
    os.close(fd)
    assert (real / "a/b/0.log").read_bytes() == b"x"
    fresh = tmp_path / "new" / "pod"          # the log directory is created when missing
    os.close(open_log_file(str(fresh / "0.log"), str(fresh)))
    assert (fresh / "0.log").is_file()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "c.log")
    with pytest.raises(OSError):   # no reader: ENXIO rather than an open that never returns
        open_log_file(str(tmp_path / "c.log"), str(tmp_path))
    reader = os.open(tmp_path / "c.log", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(InvalidArgument, match="not a regular file"):
            open_log_file(str(tmp_path / "c.log"), str(tmp_path))
    finally:
        os.close(reader)


def test_path_outside_the_log_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="not below the log directory"):
        open_log_file(str(tmp_path / "other/c.log"), str(tmp_path / "pod"))


def test_reopen_onto_a_symlink_keeps_the_old_file(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("keep\n")
    w, path = writer(tmp_path)
    w.log_dir = str(tmp_path / "logs")
    w.write("stdout", b"before\n")
    rotated = tmp_path / "logs" / "c.log.1"
    os.rename(path, rotated)
    path.symlink_to(victim)
    with pytest.raises(FailedPrecondition, match="symlink") as exc:
        w.reopen()
    assert exc.value.kind == "FailedPrecondition"
    w.write("stdout", b"still old\n")
    assert [ln[3] for ln in lines(rotated)] == ["before", "still old"]
    assert victim.read_text() == "keep\n"
    w.close()


def test_a_hard_link_to_another_file_is_refused_and_that_file_kept(tmp_path: Path) -> None:
    victim = tmp_path / "host-file"
    victim.write_text("keep\n")
    log_dir = tmp_path / "pod"
    log_dir.mkdir()
    os.link(victim, log_dir / "c.log")
    with pytest.raises(InvalidArgument, match="2 hard links") as exc:
        CriLogWriter(str(log_dir / "c.log"), log_dir=str(log_dir))
    assert exc.value.kind == "InvalidArgument"
    assert victim.read_text() == "keep\n"
