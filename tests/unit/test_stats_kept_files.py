"""KeptFiles (cgroup files held open between stats polls) and the readings made through it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cri_server.stats import kept_files, readers
from cri_server.stats.collector import CONTAINER_PARTS, POD_PARTS
from cri_server.stats.kept_files import KeptFiles
from runtime.cgroups import STAT_PARTS
from runtime.cgroups.manager import open_cgroup
from runtime.cgroups.resources import parse_flat_keyed, pick_flat_keyed


def _count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths KeptFiles opens from now on."""
    opens: list[str] = []
    real_open = os.open

    def counting_open(path: str, flags: int, *args: int) -> int:
        opens.append(path)
        return real_open(path, flags, *args)
    monkeypatch.setattr(kept_files.os, "open", counting_open)
    return opens


def _files(tmp_path: Path, **texts: str) -> dict[str, str]:
    out = {}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
        out[name] = str(tmp_path / name)
    return out


def test_each_read_gives_the_current_content_without_opening_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files(tmp_path, a="1\n", b="x 2\n")
    kept = KeptFiles()
    assert kept.read_group("g", files) == {"a": "1\n", "b": "x 2\n"}
    assert kept.open_fds() == 2
    opens = _count_opens(monkeypatch)
    with open(files["a"], "r+") as f:   # same inode, new content (as the kernel's files)
        f.write("7\n")
    assert kept.read_group("g", files) == {"a": "7\n", "b": "x 2\n"}
    assert opens == []


def test_a_missing_anchor_closes_the_group(tmp_path: Path) -> None:
    files = _files(tmp_path, a="1\n", b="2\n")
    kept = KeptFiles()
    kept.read_group("g", files)
    os.unlink(files["a"])
    assert kept.read_group("g", {"gone": str(tmp_path / "nope"), **files}) is None
    assert kept.open_fds() == 0


def test_a_missing_file_beside_its_anchor_is_remembered_for_the_groups_life(
        tmp_path: Path) -> None:
    files = {**_files(tmp_path, a="1\n"), "memsw": str(tmp_path / "memsw")}
    kept = KeptFiles()
    assert kept.read_group("g", files) == {"a": "1\n", "memsw": None}
    (tmp_path / "memsw").write_text("5\n")
    assert kept.read_group("g", files) == {"a": "1\n", "memsw": None}
    kept.forget("g")
    assert kept.read_group("g", files) == {"a": "1\n", "memsw": "5\n"}


def test_past_the_fd_budget_files_are_read_and_closed(tmp_path: Path) -> None:
    files = _files(tmp_path, a="1\n", b="2\n", c="3\n")
    kept = KeptFiles(max_fds=2)
    assert kept.read_group("g", files) == {"a": "1\n", "b": "2\n", "c": "3\n"}
    assert kept.open_fds() == 2
    assert kept.read_group("g", files) == {"a": "1\n", "b": "2\n", "c": "3\n"}
    assert kept.open_fds() == 2


def test_groups_nobody_reads_are_closed(tmp_path: Path) -> None:
    kept = KeptFiles(forget_after=0.0)
    kept.read_group("old", _files(tmp_path, a="1\n"))
    kept._last_prune = 0.0
    (tmp_path / "new").mkdir()
    kept.read_group("new", _files(tmp_path / "new", b="2\n"))   # prunes "old"
    assert set(kept._groups) <= {"new"} and kept.open_fds() <= 1


def test_long_files_are_read_whole(tmp_path: Path) -> None:
    text = "k 1\n" * 40_000   # 160 kB: more than one pread
    kept = KeptFiles()
    assert kept.read_group("g", _files(tmp_path, a=text)) == {"a": text}
    assert kept.read_group("g", {"a": str(tmp_path / "a")}) == {"a": text}


def _v1_tree(tmp_path: Path) -> tuple[str, str]:
    base = tmp_path / "cg"
    lines = []
    for ctrl in ("cpuacct", "memory", "pids"):
        (base / ctrl / "pod/c").mkdir(parents=True)
        lines.append(f"cgroup {base}/{ctrl} cgroup rw,{ctrl} 0 0")
    c = base / "memory/pod/c"
    (c / "memory.usage_in_bytes").write_text("1000\n")
    (c / "memory.memsw.usage_in_bytes").write_text("1500\n")
    (c / "memory.stat").write_text("cache 5\nrss 100\ninactive_file 10\npgfault 3\n"
                                   "pgmajfault 1\ntotal_rss 300\ntotal_inactive_file 200\n"
                                   "total_pgfault 7\ntotal_pgmajfault 2\n")
    (c / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    (c / "memory.failcnt").write_text("6\n")
    (base / "cpuacct/pod/c/cpuacct.usage").write_text("123456\n")
    (base / "pids/pod/c/pids.current").write_text("2\n")
    return str(base), "\n".join(lines)


def test_split_reading_matches_the_whole_one_and_keeps_only_its_parts(tmp_path: Path) -> None:
    root, mounts = _v1_tree(tmp_path)
    cg = open_cgroup("/pod/c", root=root, mounts_text=mounts)
    whole = cg.stats()
    assert whole == {"memory_usage_bytes": 1000, "memory_working_set_bytes": 800,
                     "memory_rss_bytes": 300, "page_faults": 7, "major_page_faults": 2,
                     "cpu_usage_ns": 123456, "swap_usage_bytes": 500, "pids_current": 2,
                     "oom_kill_count": 4, "memory_failcnt": 6}
    kept = KeptFiles()
    for parts in (CONTAINER_PARTS, POD_PARTS, STAT_PARTS):
        texts = kept.read_group(str(parts), cg.stat_files(parts))
        assert texts is not None
        part = cg.parse_stats(texts, parts)
        assert part == {k: v for k, v in whole.items() if k in part}
    assert "memory.oom_control" not in " ".join(cg.stat_files(CONTAINER_PARTS).values())
    assert "pids.current" not in " ".join(cg.stat_files(CONTAINER_PARTS).values())


def test_second_reading_of_a_cgroup_opens_no_file(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, mounts = _v1_tree(tmp_path)
    cg = open_cgroup("/pod/c", root=root, mounts_text=mounts)
    monkeypatch.setitem(readers._cgroups, "/pod/c", cg)
    kept = KeptFiles()
    first = readers.cgroup_stats("/pod/c", CONTAINER_PARTS, kept)
    opens = _count_opens(monkeypatch)
    assert readers.cgroup_stats("/pod/c", CONTAINER_PARTS, kept) == first
    assert opens == [] and first["cpu_usage_ns"] == 123456


def test_pick_flat_keyed_agrees_with_parse_flat_keyed() -> None:
    for text in ("a 1\nb 2\n", "a 1\nb 2", "", "total_a 5\na 1\n", "a x\nb 2\n", "b 2\n\na 1\n",
                 "a 1 2\nb 3\n"):
        full = parse_flat_keyed(text)
        assert pick_flat_keyed(text, ("a", "b", "c")) == {k: v for k, v in full.items()
                                                          if k in ("a", "b", "c")}, text


def test_forget_prefixed_closes_only_the_groups_not_kept(tmp_path: Path) -> None:
    files = _files(tmp_path, a="1\n", b="2\n", c="3\n")
    kept = KeptFiles()
    for key, name in (("net:p1", "a"), ("net:p2", "b"), ("/cg", "c")):
        assert kept.read_group(key, {name: files[name]}) == {
            name: (tmp_path / name).read_text()}
    assert kept.open_fds() == 3
    kept.forget_prefixed("net:", {"net:p2"})
    assert kept.open_fds() == 2
    kept.forget_prefixed("net:", set())
    assert kept.open_fds() == 1            # a group of another prefix stays
    kept.forget("/cg")
    assert kept.open_fds() == 0


def test_interfaces_read_through_kept_files_stay_open_under_their_key() -> None:
    kept = KeptFiles()
    plain = readers.interfaces_of(os.getpid())
    through = readers.interfaces_of(os.getpid(), kept, "net:self")
    assert [i.name for i in through] == [i.name for i in plain]
    assert kept.open_fds() == 1
    assert [i.name for i in readers.interfaces_of(os.getpid(), kept, "net:self")] == \
        [i.name for i in plain]
    assert kept.open_fds() == 1
    assert readers.interfaces_of(2 ** 22 + 1, kept, "net:gone") == []   # no such process
    assert kept.open_fds() == 1
    kept.forget_prefixed("net:", set())
    assert kept.open_fds() == 0
