"""Joining and leaving resctrl groups (runtime.resctrl), against a directory laid out like
/sys/fs/resctrl (the test machine has no resctrl)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime import resctrl


def fake_root(tmp_path: Path, *groups: str) -> Path:
    root = tmp_path / "resctrl"
    (root / "info").mkdir(parents=True)
    for g in groups:
        (root / g).mkdir(parents=True)
        (root / g / "tasks").write_text("")
        (root / g / "schemata").write_text("")
    return root


def rdt(root: Path, **kw: object) -> dict[str, object]:
    v = resctrl.validate({"root": str(root), "clos_id": "gold", **kw})
    assert v is not None
    return v


def test_join_writes_schemata_and_pid(tmp_path: Path) -> None:
    root = fake_root(tmp_path, "gold", "gold/mon_groups/c1")
    resctrl.join(rdt(root, schemata=["L3:0=ff", "MB:0=50"], monitoring=True), "c1", 4242)
    assert (root / "gold" / "schemata").read_text() == "L3:0=ff\nMB:0=50\n"
    assert (root / "gold" / "tasks").read_text() == "4242\n"
    assert (root / "gold" / "mon_groups" / "c1" / "tasks").read_text() == "4242\n"


def test_no_resctrl_and_unwritable_group(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="not mounted"):
        resctrl.join(rdt(tmp_path / "none"), "c1", 1)
    root = fake_root(tmp_path)
    with pytest.raises(FailedPrecondition, match="tasks"):  # a group without a tasks file
        resctrl.join(rdt(root), "c1", 1)


def test_remove_only_what_the_container_owns(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (root / "c1").mkdir()
    (root / "gold" / "mon_groups" / "c1").mkdir(parents=True)
    assert resctrl.remove(rdt(root, monitoring=True), "c1") == []
    assert (root / "gold").is_dir() and not (root / "gold" / "mon_groups" / "c1").exists()
    assert resctrl.remove(resctrl.validate({"root": str(root), "clos_id": "c1",
                                            "owned": True}), "c1") == []
    assert not (root / "c1").exists()
    assert resctrl.remove(None, "c1") == []


@pytest.mark.parametrize("bad", [{"root": "rel", "clos_id": "a"}, {"clos_id": ".."},
                                 {"clos_id": "a/b"}, {"clos_id": ""},
                                 {"clos_id": "a", "schemata": ["x\ny"]}, []])
def test_validate(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        resctrl.validate(bad)


def test_validate_defaults() -> None:
    assert resctrl.validate({"clos_id": "a"}) == {"root": "/sys/fs/resctrl", "clos_id": "a",
                                                  "schemata": [], "monitoring": False,
                                                  "owned": False}
    assert os.path.isabs(resctrl.DEFAULT_ROOT)
