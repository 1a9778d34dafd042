from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cri_server.store import Store
from pycri_common.errors import AlreadyExists


def test_insert_get_update_delete(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
    s.insert("pod", "abc", "ns/name/uid/0", {"id": "abc", "state": "READY"})
    assert s.get("pod", "abc") == {"id": "abc", "state": "READY"}
    s.update("pod", "abc", {"id": "abc", "state": "NOTREADY"})
    assert (Store(tmp_path / "r.db").get("pod", "abc") or {}).get("state") == "NOTREADY"  # persisted
    assert s.ids_with_prefix("pod", "ab") == ["abc"] and s.ids_with_prefix("pod", "x") == []
    s.delete("pod", "abc")
    assert s.get("pod", "abc") is None and s.list("pod") == []


def test_replace_field_is_a_compare_and_set(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
    s.insert("pod", "a", None, {"id": "a", "state": "ready", "network_ready": True})
    s.update("pod", "a", {"id": "a", "state": "ready", "network_ready": False})
    assert s.replace_field("pod", "a", "state", "ready", "notready")
    assert s.get("pod", "a") == {"id": "a", "state": "notready", "network_ready": False}
    assert not s.replace_field("pod", "a", "state", "ready", "notready")   # no longer ready
    assert not s.replace_field("pod", "gone", "state", "ready", "notready")


def test_name_reservation(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
    s.insert("pod", "a", "ns/n/u/0", {"id": "a"})
    with pytest.raises(AlreadyExists, match="reserved by a"):
        s.insert("pod", "b", "ns/n/u/0", {"id": "b"})
    s.insert("container", "c", "ns/n/u/0", {"id": "c"})  # names are per kind
    s.release_name("pod", "a")
    s.insert("pod", "b", "ns/n/u/0", {"id": "b"})
    assert (s.find_by_name("pod", "ns/n/u/0") or {}).get("id") == "b"


def test_concurrent_inserts_from_threads(tmp_path: Path) -> None:
    s = Store(tmp_path / "r.db")
    errors: list[Exception] = []

    def work(i: int) -> None:
        try:
            for j in range(20):
                s.insert("container", f"{i}-{j}", f"name-{i}-{j}", {"id": f"{i}-{j}"})
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(s.list("container")) == 160
