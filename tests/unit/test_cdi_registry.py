"""The CDI registry (spec dirs, precedence, conflicts, reload on change, hostile files) and
the application of containerEdits to a ContainerSpec (cri_server.cdi.registry, .inject)."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from cri_server.cdi import inject
from cri_server.cdi.registry import Registry, Resolved
from pycri_common.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime import container_spec


def spec_doc(kind: str = "v.com/c", devices: dict[str, dict[str, Any]] | None = None,
             version: str = "0.7.0", **top: Any) -> dict[str, Any]:
    devices = devices if devices is not None else {"a": {"env": ["A=1"]}}
    return {"cdiVersion": version, "kind": kind,
            "devices": [{"name": n, "containerEdits": e} for n, e in devices.items()], **top}


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_later_dir_wins_and_same_dir_conflicts_drop_the_device(tmp_path: Path) -> None:
    low, high = tmp_path / "etc", tmp_path / "run"
    write(low / "a.json", spec_doc(devices={"x": {"env": ["WHO=low"]}, "y": {"env": ["Y=1"]}}))
    write(high / "b.json", spec_doc(devices={"x": {"env": ["WHO=high"]}}))
    write(high / "c.json", spec_doc(devices={"z": {"env": ["Z=1"]}}))
    write(high / "d.json", spec_doc(devices={"z": {"env": ["Z=2"]}}))
    reg = Registry([str(low), str(high)])
    (x, y) = reg.resolve(["v.com/c=x", "v.com/c=y"])
    assert x.device.edits["env"] == ["WHO=high"] and y.spec.path == str(low / "a.json")
    with pytest.raises(InvalidArgument, match=re.escape("v.com/c=z")):
        reg.resolve(["v.com/c=z"])
    errors = reg.status()["errors"]
    assert "defined both in" in errors[str(high / "c.json")] == errors[str(high / "d.json")]


def test_unknown_kind_and_device_say_what_the_registry_holds(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "cdiVersion: 0.3.0\nkind: v.com/c\ndevices:\n"
                               "- name: a\n  containerEdits: {env: [A=1]}\n")
    reg = Registry([str(tmp_path)])
    with pytest.raises(InvalidArgument, match=r"kind v.com/c has devices a\b"):
        reg.resolve(["v.com/c=b"])
    with pytest.raises(InvalidArgument, match=r"kinds known: v.com/c"):
        reg.resolve(["o.com/c=a"])
    with pytest.raises(InvalidArgument, match="not fully qualified"):
        reg.resolve(["a"])


def test_disabled_registry_refuses_devices(tmp_path: Path) -> None:
    reg = Registry([str(tmp_path)], enabled=False)
    assert reg.resolve([]) == []
    with pytest.raises(FailedPrecondition, match=re.escape("cdi.enable")):
        reg.resolve(["v.com/c=a"])


def test_reload_on_add_change_remove(tmp_path: Path) -> None:
    d = tmp_path / "cdi"  # does not exist yet
    reg = Registry([str(d)])
    with pytest.raises(InvalidArgument):
        reg.resolve(["v.com/c=a"])
    f = write(d / "a.json", spec_doc(devices={"a": {"env": ["A=1"]}}))
    assert reg.resolve(["v.com/c=a"])[0].device.edits["env"] == ["A=1"]
    time.sleep(0.01)
    write(f, spec_doc(devices={"a": {"env": ["A=2"]}}))  # same size, in place
    assert reg.resolve(["v.com/c=a"])[0].device.edits["env"] == ["A=2"]
    f.unlink()
    with pytest.raises(InvalidArgument):
        reg.resolve(["v.com/c=a"])


def test_unchanged_files_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    write(tmp_path / "a.json", spec_doc())
    reg = Registry([str(tmp_path)])
    reg.resolve(["v.com/c=a"])
    from cri_server.cdi import registry as mod
    monkeypatch.setattr(mod, "read_regular_file", lambda *a, **k: pytest.fail("re-read"))
    for _ in range(3):
        reg.resolve(["v.com/c=a"])


def test_hostile_files_are_reported_and_the_rest_works(tmp_path: Path) -> None:
    write(tmp_path / "good.json", spec_doc())
    write(tmp_path / "bad.json", "{not json")
    write(tmp_path / "deep.json", "[" * 500 + "]" * 500)
    write(tmp_path / "bomb.yaml", "a: &a [x]\nb: [*a, *a]\n")
    write(tmp_path / "huge.yaml", "a: " + "x" * (4 * 1024 * 1024 + 10) + "\n")
    os.mkfifo(tmp_path / "fifo.yaml")
    os.symlink("loop.json", tmp_path / "loop.json")
    os.symlink("/nonexistent/x.json", tmp_path / "dangling.json")
    os.symlink(str(tmp_path / "good.json"), tmp_path / "link.json.txt")  # not a spec name
    (tmp_path / "dir.json").mkdir()
    os.mknod(tmp_path / "dev.json", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    write(tmp_path / "other.txt", "ignored")
    reg = Registry([str(tmp_path)])
    assert reg.resolve(["v.com/c=a"])[0].spec.path == str(tmp_path / "good.json")
    errors = reg.status()["errors"]
    assert set(errors) == {str(tmp_path / n) for n in (
        "bad.json", "deep.json", "bomb.yaml", "huge.yaml", "fifo.yaml", "loop.json",
        "dangling.json", "dev.json")}
    assert "FIFO" in errors[str(tmp_path / "fifo.yaml")]
    assert "character device" in errors[str(tmp_path / "dev.json")]
    assert "larger than" in errors[str(tmp_path / "huge.yaml")]


def test_symlinked_spec_is_followed(tmp_path: Path) -> None:
    real = write(tmp_path / "elsewhere" / "real.json", spec_doc())
    (tmp_path / "cdi").mkdir()
    os.symlink(real, tmp_path / "cdi" / "vendor.json")
    assert Registry([str(tmp_path / "cdi")]).resolve(["v.com/c=a"])


# -- inject --------------------------------------------------------------------------

def base_spec() -> dict[str, Any]:
    return {"id": "c1", "rootfs": {"lower": ["/l"], "upper": "/c/upper", "work": "/c/work"},
            "process": {"args": ["sh"], "env": ["PATH=/bin", "A=old"],
                        "user": {"uid": 1000, "gid": 1000, "supplemental_groups": [5]}},
            "mounts": [m.to_json() for m in container_spec.default_mounts(privileged=False)],
            "devices": [{"host_path": "/dev/null", "container_path": "/dev/x",
                         "permissions": "rwm"}]}


def resolved(tmp_path: Path, devices: dict[str, dict[str, Any]],
             names: list[str] | None = None, **top: Any) -> list[Resolved]:
    write(tmp_path / "s.json", spec_doc(devices=devices, **top))
    return Registry([str(tmp_path)]).resolve([f"v.com/c={n}" for n in names or devices])


def test_apply_every_edit_kind(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    devs = resolved(tmp_path, {
        "a": {"env": ["A=new", "B=1"],
              "deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/null"},  # replaces the CRI one
                              {"path": "/dev/f", "type": "c", "major": 10, "minor": 229},
                              {"path": "/dev/p", "type": "p", "permissions": "none"}],
              "mounts": [{"hostPath": str(share), "containerPath": "/opt/a/b",
                          "options": ["ro", "bind"]},
                         {"hostPath": "tmpfs", "containerPath": "/opt", "type": "tmpfs",
                          "options": ["size=1m"]}],
              "hooks": [{"hookName": "prestart", "path": "/bin/h", "args": ["h", "x"]},
                        {"hookName": "poststop", "path": "/bin/p", "timeout": 5}],
              "additionalGids": [0, 5, 77]}},
        containerEdits={"env": ["S=1"]})
    s = inject.apply(base_spec(), devs)
    assert s["process"]["env"] == ["PATH=/bin", "S=1", "A=new", "B=1"]
    by_path = {d["container_path"]: d for d in s["devices"]}
    assert by_path["/dev/x"] == {"host_path": "/dev/null", "container_path": "/dev/x",
                                 "permissions": "rwm", "type": "c", "major": 1, "minor": 3,
                                 "file_mode": 0o666, "uid": 1000, "gid": 1000}
    assert len(s["devices"]) == 3
    assert by_path["/dev/f"]["major"] == 10 and by_path["/dev/f"]["permissions"] == "rwm"
    assert by_path["/dev/p"]["type"] == "p" and by_path["/dev/p"]["permissions"] == ""
    dests = [m["destination"] for m in s["mounts"]]
    assert dests.index("/opt") < dests.index("/opt/a/b")
    bind = next(m for m in s["mounts"] if m["destination"] == "/opt/a/b")
    assert bind["type"] == "bind" and bind["readonly"] and "rbind" in bind["options"]
    assert s["hooks"] == {"createRuntime": [{"path": "/bin/h", "args": ["h", "x"], "env": [],
                                             "timeout": None}],
                          "poststop": [{"path": "/bin/p", "args": ["/bin/p"], "env": [],
                                        "timeout": 5}]}
    assert s["process"]["user"]["supplemental_groups"] == [5, 77]
    assert s["cdi_devices"] == ["v.com/c=a"]
    checked = container_spec.ContainerSpec.from_json(s)
    assert checked.hooks["poststop"][0]["path"] == "/bin/p"
    assert checked.to_json()["devices"] == s["devices"]
    assert checked.cdi_devices == ("v.com/c=a",)
    assert container_spec.ContainerSpec.from_json(checked.to_json()) == checked  # round trip


def test_device_node_info_from_the_host(tmp_path: Path) -> None:
    node = tmp_path / "zero"
    os.mknod(node, stat.S_IFCHR | 0o640, os.stat("/dev/zero").st_rdev)
    devs = resolved(tmp_path, {"a": {"deviceNodes": [{"path": "/dev/z", "hostPath": str(node),
                                                      "uid": 3}]}})
    (dev,) = inject.apply(base_spec(), devs)["devices"][1:]
    assert (dev["type"], dev["major"], dev["minor"]) == ("c", 1, 5)
    assert dev["file_mode"] == 0o640 and dev["uid"] == 3 and dev["gid"] == 1000


@pytest.mark.parametrize(("node", "error", "match"), [
    ({"path": "/dev/none-such"}, NotFound, "does not exist"),
    ({"path": "/dev/z", "hostPath": "/etc/hostname"}, NotFound, "not a device node"),
    ({"path": "/dev/z", "hostPath": "/dev/null", "type": "b"}, InvalidArgument, "type b"),
])
def test_bad_device_nodes(tmp_path: Path, node: dict[str, Any], error: type[Exception],
                          match: str) -> None:
    devs = resolved(tmp_path, {"a": {"deviceNodes": [node]}})
    with pytest.raises(error, match=match):
        inject.apply(base_spec(), devs)


def test_missing_mount_source(tmp_path: Path) -> None:
    devs = resolved(tmp_path, {"a": {"mounts": [{"hostPath": "/no/such", "containerPath": "/x"}]}})
    with pytest.raises(NotFound, match=re.escape("CDI device v.com/c=a: mount source")):
        inject.apply(base_spec(), devs)


@pytest.mark.parametrize("edits", [
    ({"env": ["X=1"]}, {"env": ["X=2"]}),
    ({"deviceNodes": [{"path": "/dev/q", "type": "c", "major": 1, "minor": 3}]},
     {"deviceNodes": [{"path": "/dev/q", "type": "c", "major": 1, "minor": 5}]}),
    ({"mounts": [{"hostPath": "/etc", "containerPath": "/m"}]},
     {"mounts": [{"hostPath": "/usr", "containerPath": "/m"}]}),
])
def test_conflicting_edits_name_both_devices(tmp_path: Path, edits: tuple[Any, Any]) -> None:
    devs = resolved(tmp_path, {"one": edits[0], "two": edits[1]})
    with pytest.raises(InvalidArgument, match=re.escape("v.com/c=one and CDI device v.com/c=two")):
        inject.apply(base_spec(), devs)


def test_a_device_refines_its_own_spec_level_edits(tmp_path: Path) -> None:
    devs = resolved(tmp_path, {"one": {"env": ["X=dev"]}}, containerEdits={"env": ["X=spec"]})
    assert "X=dev" in inject.apply(base_spec(), devs)["process"]["env"]


def test_identical_edits_of_two_devices_are_no_conflict(tmp_path: Path) -> None:
    same = {"env": ["X=1"], "deviceNodes": [{"path": "/dev/q", "type": "c", "major": 1,
                                             "minor": 3}]}
    s = inject.apply(base_spec(), resolved(tmp_path, {"one": same, "two": same}))
    assert [d["container_path"] for d in s["devices"]].count("/dev/q") == 1


def test_intel_rdt_and_net_devices_are_clear_errors(tmp_path: Path) -> None:
    devs = resolved(tmp_path, {"a": {"intelRdt": {"closID": "gold"}}})
    with pytest.raises(FailedPrecondition, match="resctrl"):
        inject.apply(base_spec(), devs, resctrl=str(tmp_path / "no-resctrl"))
    fake = tmp_path / "resctrl"
    (fake / "info").mkdir(parents=True)
    s = inject.apply(base_spec(), devs, resctrl=str(fake))
    assert s["intel_rdt"] == {"root": str(fake), "clos_id": "gold", "schemata": [],
                              "monitoring": False, "owned": False}
    devs = resolved(tmp_path, {"a": {"intelRdt": {"l3CacheSchema": "L3:0=f",
                                                  "schemata": ["MB:0=50"],
                                                  "enableMonitoring": True}}}, version="1.1.0")
    parsed = container_spec.ContainerSpec.from_json(inject.apply(base_spec(), devs,
                                                                 resctrl=str(fake)))
    assert parsed.intel_rdt == {"root": str(fake), "clos_id": "c1",
                              "schemata": ["L3:0=f", "MB:0=50"], "monitoring": True,
                              "owned": True}
    assert container_spec.ContainerSpec.from_json(parsed.to_json()) == parsed
    devs = resolved(tmp_path, {"a": {"netDevices": [{"hostInterfaceName": "eth9",
                                                     "name": "net0"}]}}, version="1.1.0")
    with pytest.raises(FailedPrecondition, match="netDevices"):
        inject.apply(base_spec(), devs)


def test_unreadable_spec_is_reported() -> None:
    """A spec the daemon may not read (here: read by an unprivileged child, since root reads
    any mode) is an error of that file only."""
    tmp_path = Path(tempfile.mkdtemp(prefix="pycri-cdi-unit-"))  # /tmp: nobody may enter
    try:
        _unreadable(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _unreadable(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    write(tmp_path / "good.json", spec_doc())
    secret = write(tmp_path / "secret.json", spec_doc(kind="v.com/s"))
    os.chmod(tmp_path / "good.json", 0o644)
    os.chmod(secret, 0o000)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            reg = Registry([str(tmp_path)])
            ok = bool(reg.resolve(["v.com/c=a"]))
            os.write(w, json.dumps({"ok": ok, "errors": reg.status()["errors"]}).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, repr(e).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    result = json.loads(data)
    assert result["ok"] and "Permission denied" in result["errors"][str(secret)]
