"""CDI spec parsing and validation: names, versions, edits, JSON and YAML (cri_server.cdi)."""
from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
import yaml

from cri_server.cdi import document, names, spec
from pycri_common.errors import InvalidArgument

BASE: dict[str, Any] = {
    "cdiVersion": "0.3.0", "kind": "vendor.com/gpu",
    "devices": [{"name": "gpu0", "containerEdits": {"env": ["A=1"]}}],
}


def parse(doc: dict[str, Any]) -> spec.Spec:
    return spec.parse_spec(doc, "/etc/cdi/test.json")


def with_(**changes: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    d.update(changes)
    return d


def dev_edits(**edits: Any) -> list[dict[str, Any]]:
    return [{"name": "gpu0", "containerEdits": edits}]


# -- names -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vendor.com/class=name", "a/b=c", "nvidia.com/gpu=0",
                                  "nvidia.com/gpu=all", "x.y-z_w/c.l-a_s=d:e.v-1_2",
                                  "vendor.com/mig=GPU-3c4f:0"])
def test_valid_qualified_names(name: str) -> None:
    q = names.parse_qualified(name)
    assert str(q) == name


@pytest.mark.parametrize("name", ["", "vendor.com/class", "vendor.com=name", "/class=name",
                                  "vendor.com/=name", "vendor.com/class=", "1vendor/class=n",
                                  "vendor.com/class/x=n", "vendor-/class=n", "vendor/class-=n",
                                  "vendor/class=-n", "vendor/class=n-", "vendor/cl ass=n",
                                  "vendor/class=n/m", "/dev/nvidia0", "v/c=n=m!",
                                  "v/c=" + "x" * 1000])
def test_invalid_qualified_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        names.parse_qualified(name)


def test_requested_devices_merges_field_and_annotations_once() -> None:
    got = names.requested_devices(
        ["v.com/c=a", "v.com/c=b"],
        {"cdi.k8s.io/z": "v.com/c=c", "cdi.k8s.io/a": "v.com/c=b,v.com/c=d", "other": "x=y"})
    assert got == ["v.com/c=a", "v.com/c=b", "v.com/c=d", "v.com/c=c"]


def test_requested_devices_names_the_bad_annotation() -> None:
    with pytest.raises(InvalidArgument, match=re.escape("annotation 'cdi.k8s.io/k'")):
        names.requested_devices([], {"cdi.k8s.io/k": "v.com/c=a,,"})
    with pytest.raises(InvalidArgument, match=r"CDI_devices\[1\]"):
        names.requested_devices(["v.com/c=a", "nope"], {})


# -- versions ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", spec.VERSIONS)
def test_every_version_from_0_3_0_to_current(version: str) -> None:
    assert parse(with_(cdiVersion=version)).version == version
    assert parse(with_(cdiVersion="v" + version)).version == version


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "1.2.0", "2.0.0", "0.3", "", None, 3])
def test_unknown_versions(version: Any) -> None:
    with pytest.raises(InvalidArgument, match="cdiVersion"):
        parse(with_(cdiVersion=version))


@pytest.mark.parametrize(("changes", "needs"), [
    ({"devices": dev_edits(mounts=[{"hostPath": "/a", "containerPath": "/b", "type": "bind"}])},
     "0.4.0"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "hostPath": "/dev/y"}])}, "0.5.0"),
    ({"devices": [{"name": "0gpu", "containerEdits": {"env": ["A=1"]}}]}, "0.5.0"),
    ({"annotations": {"a": "b"}}, "0.6.0"),
    ({"kind": "vendor.com/gpu.x"}, "0.6.0"),
    ({"devices": dev_edits(additionalGids=[5])}, "0.7.0"),
    ({"devices": dev_edits(intelRdt={"closID": "c"})}, "0.7.0"),
    ({"devices": dev_edits(intelRdt={"schemata": ["L3:0=f"]})}, "1.1.0"),
    ({"devices": dev_edits(netDevices=[{"hostInterfaceName": "eth1", "name": "net1"}])},
     "1.1.0"),
])
def test_fields_need_their_minimum_version(changes: dict[str, Any], needs: str) -> None:
    idx = spec.VERSIONS.index(needs)
    assert parse(with_(cdiVersion=needs, **changes)).minimum_version == needs
    with pytest.raises(InvalidArgument, match=f"need at least {needs}"):
        parse(with_(cdiVersion=spec.VERSIONS[idx - 1], **changes))


def test_removed_intel_rdt_fields_only_before_1_1_0() -> None:
    changes = {"devices": dev_edits(intelRdt={"closID": "c", "enableCMT": True})}
    parse(with_(cdiVersion="1.0.0", **changes))
    with pytest.raises(InvalidArgument, match=re.escape("removed in 1.1.0")):
        parse(with_(cdiVersion="1.1.0", **changes))


# -- structure ---------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "match"), [
    ({"kind": "vendor.com"}, "kind"),
    ({"kind": "vendor.com/a/b"}, "kind"),
    ({"kind": "-v.com/a"}, "vendor"),
    ({"devices": []}, "at least one device"),
    ({"devices": [{"name": "a", "containerEdits": {}}]}, "at least one edit"),
    ({"devices": [{"name": "a"}]}, "at least one edit"),
    ({"devices": BASE["devices"] * 2}, "defined twice"),
    ({"devices": [{"name": "bad/name", "containerEdits": {"env": ["A=1"]}}]}, "invalid character"),
    ({"extra": 1}, "unknown field 'extra'"),
    ({"devices": dev_edits(env=["NOEQUALS"])}, "NAME=VALUE"),
    ({"devices": dev_edits(env=["=x"])}, "NAME=VALUE"),
    ({"devices": dev_edits(deviceNodes=[{"hostPath": "/dev/x"}])}, "path"),
    ({"devices": dev_edits(deviceNodes=[{"path": "dev/x"}])}, "absolute"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "type": "z"}])}, "type"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "permissions": "rwx"}])},
     "permissions"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "major": -1}])}, "major"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "uid": 2**32}])}, "uid"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "major": True}])}, "major"),
    ({"devices": dev_edits(deviceNodes=[{"path": "/dev/x", "bogus": 1}])}, "bogus"),
    ({"devices": dev_edits(mounts=[{"containerPath": "/b"}])}, "hostPath"),
    ({"devices": dev_edits(mounts=[{"hostPath": "/a", "containerPath": "b"}])}, "absolute"),
    ({"devices": dev_edits(hooks=[{"hookName": "prestop", "path": "/bin/x"}])}, "hookName"),
    ({"devices": dev_edits(hooks=[{"hookName": "poststop", "path": "x"}])}, "absolute"),
    ({"devices": dev_edits(hooks=[{"hookName": "poststop", "path": "/x", "timeout": 0}])},
     "timeout"),
    ({"devices": dev_edits(hooks=[{"hookName": "poststop", "path": "/x", "env": ["X"]}])},
     "NAME=VALUE"),
    ({"cdiVersion": "0.7.0", "devices": dev_edits(additionalGids=[-1])}, "additionalGids"),
    ({"cdiVersion": "0.7.0", "devices": dev_edits(intelRdt={"closID": "../x"})}, "closID"),
    ({"cdiVersion": "1.1.0", "devices": dev_edits(netDevices=[
        {"hostInterfaceName": "a", "name": "x"}, {"hostInterfaceName": "b", "name": "x"}])},
     "listed twice"),
    ({"devices": dev_edits(env="A=1")}, "list"),
    ({"devices": "x"}, "list"),
])
def test_invalid_specs_name_the_field(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse(with_(**changes))


def test_not_an_object() -> None:
    docs: list[Any] = [None, [], "x", 3]
    for doc in docs:
        with pytest.raises(InvalidArgument, match="must be an object"):
            parse(doc)


def test_edits_are_normalized() -> None:
    s = parse(with_(cdiVersion="0.7.0", containerEdits={"env": ["S=1"]}, devices=dev_edits(
        deviceNodes=[{"path": "/dev/x", "permissions": "none"}],
        hooks=[{"hookName": "createContainer", "path": "/bin/h"}],
        mounts=[{"hostPath": "/a", "containerPath": "/b"}], additionalGids=[0, 7])))
    dev = s.devices["gpu0"]
    assert s.vendor == "vendor.com" and s.cls == "gpu" and s.edits["env"] == ["S=1"]
    assert dev.edits["deviceNodes"] == [{"path": "/dev/x", "hostPath": "", "type": "",
                                         "major": None, "minor": None, "fileMode": None,
                                         "permissions": "none", "uid": None, "gid": None}]
    assert dev.edits["hooks"] == [{"hookName": "createContainer", "path": "/bin/h", "args": [],
                                   "env": [], "timeout": None}]
    assert dev.edits["mounts"][0] == {"hostPath": "/a", "containerPath": "/b", "type": "",
                                      "options": []}
    assert dev.edits["additionalGids"] == [0, 7]


# -- documents ---------------------------------------------------------------------------

NVIDIA_LIKE_YAML = """\
---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /dev/nvidia0
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.535.104.05
    options: [ro, nosuid, nodev, bind]
"""


def test_yaml_and_json_give_the_same_spec() -> None:
    from_yaml = spec.parse_spec(document.load_document(NVIDIA_LIKE_YAML.encode(), "n.yaml"),
                                "n.yaml")
    as_json = json.dumps(yaml.safe_load(NVIDIA_LIKE_YAML)).encode()
    from_json = spec.parse_spec(document.load_document(as_json, "n.json"), "n.yaml")
    assert from_yaml == from_json
    assert set(from_yaml.devices) == {"0", "all"}


@pytest.mark.parametrize(("text", "match"), [
    ("a: &x [1]\nb: *x\n", "aliases"),
    ("a: &x 1\n", "anchors"),
    ("base: &b {x: 1}\nc:\n  <<: *b\n", "aliases"),
    ("a: !!python/object:os.system x\n", "usable YAML"),
    ("a: [1\n", "usable YAML"),
    ("a: 1\n---\nb: 2\n", "more than one"),
    ("[" * 200 + "]" * 200, "deeper"),
    ("a:\n" + "".join("  " * i + "- \n" for i in range(1, 100)), "deeper"),
    ("\xff\xfe", "UTF-8"),
])
def test_hostile_yaml(text: str, match: str) -> None:
    data = text.encode("latin-1") if text.startswith("\xff") else text.encode()
    with pytest.raises(InvalidArgument, match=match):
        document.load_document(data, "x.yaml")


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    with pytest.raises(InvalidArgument, match="aliases"):
        document.load_document("\n".join(lines).encode(), "bomb.yaml")


@pytest.mark.parametrize("name", ["x.json", "x.yaml"])
def test_too_large_and_too_deep(name: str) -> None:
    with pytest.raises(InvalidArgument, match="larger than"):
        document.load_document(b" " * (document.MAX_SPEC_BYTES + 1), name)
    with pytest.raises(InvalidArgument, match=r"deeper|nest"):
        document.load_document(b"[" * 100 + b"]" * 100, name)


def test_empty_yaml_is_not_a_spec() -> None:
    assert document.load_document(b"", "x.yaml") is None
    with pytest.raises(InvalidArgument, match="must be an object"):
        spec.parse_spec(None, "x.yaml")
