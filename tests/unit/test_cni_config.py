"""Conf dir loading, validation and the default conflist (no root needed)."""
from __future__ import annotations

import json
import os

import pytest

from cni.config import (
    InvalidConfig,
    choose_network,
    default_conflist,
    load_file,
    parse_conflist,
    scan_conf_dir,
)
from cni.errors import CniConfigError
from pycri_common import errors

BRIDGE_LIST = {
    "cniVersion": "1.0.0",
    "name": "net-a",
    "plugins": [{"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True}}],
}


def write(path: str, data: object) -> str:
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    return path


def test_first_file_by_name_wins_across_extensions(tmp_path):
    write(tmp_path / "20-b.conflist", dict(BRIDGE_LIST, name="second"))
    write(tmp_path / "10-a.conf", {"cniVersion": "0.4.0", "name": "first", "type": "ptp"})
    write(tmp_path / "05-ignored.txt", "not a config")
    net = choose_network(str(tmp_path), None)
    assert net.name == "first"
    assert net.cni_version == "0.4.0"
    # a .conf single plugin is wrapped as a one-plugin list carrying the whole document
    assert net.plugin_types() == ["ptp"]
    assert net.plugins[0]["name"] == "first"
    assert net.source == str(tmp_path / "10-a.conf")


def test_json_extension_is_a_single_conf(tmp_path):
    write(tmp_path / "99.json", {"cniVersion": "1.0.0", "name": "j", "type": "macvlan"})
    assert choose_network(str(tmp_path), None).plugin_types() == ["macvlan"]


def test_invalid_files_are_skipped_with_reasons(tmp_path):
    write(tmp_path / "00-broken.conflist", "{not json")
    write(tmp_path / "01-noname.conflist", {"cniVersion": "1.0.0", "plugins": [{"type": "x"}]})
    write(tmp_path / "02-good.conflist", BRIDGE_LIST)
    scan = scan_conf_dir(str(tmp_path))
    assert scan.chosen is not None and scan.chosen.name == "net-a"
    assert "not valid JSON" in scan.skipped[str(tmp_path / "00-broken.conflist")]
    assert "'name'" in scan.skipped[str(tmp_path / "01-noname.conflist")]


def test_only_invalid_files_means_no_network_not_default(tmp_path):
    write(tmp_path / "10.conflist", {"cniVersion": "1.0.0", "name": "x", "plugins": []})
    with pytest.raises(CniConfigError) as info:
        choose_network(str(tmp_path), default_conflist())
    assert "no valid CNI network config" in str(info.value)
    assert "non-empty list" in str(info.value)
    assert isinstance(info.value, errors.FailedPrecondition)


def test_empty_or_missing_dir_uses_default(tmp_path):
    default = default_conflist()
    assert choose_network(str(tmp_path), default) is default
    assert choose_network(str(tmp_path / "missing"), default) is default
    with pytest.raises(CniConfigError, match="no CNI network config found"):
        choose_network(str(tmp_path), None)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"name": "n", "plugins": [{"type": "a"}]}, "cniVersion"),
        ({"cniVersion": "9.9.9", "name": "n", "plugins": [{"type": "a"}]}, "not supported"),
        ({"cniVersion": "1.0.0", "name": "-bad", "plugins": [{"type": "a"}]}, "'name'"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{}]}, "plugins[0] has no valid 'type'"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../sh"}]}, "'type'"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": "x"}, "non-empty list"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a", "capabilities": 1}]},
         "capabilities"),
        ([], "not a JSON object"),
    ],
)
def test_validation_rejects(doc, reason):
    with pytest.raises(InvalidConfig) as info:
        parse_conflist(doc, "/etc/cni/net.d/x.conflist")
    assert reason in str(info.value)
    assert "/etc/cni/net.d/x.conflist" in str(info.value)


def test_conflist_content_in_conf_file_is_explained(tmp_path):
    path = write(tmp_path / "10.conf", BRIDGE_LIST)
    with pytest.raises(InvalidConfig, match=r"rename it to \.conflist"):
        load_file(str(path))


def test_cni_versions_picks_highest_supported():
    doc = dict(BRIDGE_LIST, cniVersions=["0.3.1", "1.0.0", "7.0.0"])
    del doc["cniVersion"]
    assert parse_conflist(doc, "x").cni_version == "1.0.0"


def test_disable_check():
    assert parse_conflist(BRIDGE_LIST, "x").supports_check()
    assert not parse_conflist(dict(BRIDGE_LIST, disableCheck=True), "x").supports_check()
    assert not parse_conflist(dict(BRIDGE_LIST, cniVersion="0.3.1"), "x").supports_check()


def test_default_conflist_shape():
    net = default_conflist()
    assert net.name == "pycri" and net.cni_version == "1.0.0"
    assert net.plugin_types() == ["bridge", "portmap"]
    bridge = net.plugins[0]
    assert bridge["bridge"] == "pycri0"
    assert bridge["isGateway"] is True and bridge["ipMasq"] is True
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16"}]]
    assert "dataDir" not in bridge["ipam"]
    assert net.plugins[1]["capabilities"] == {"portMappings": True}


def test_default_conflist_parameters():
    net = default_conflist(subnet="10.250.3.0/24", subnet_v6="fd00:250:3::/64",
                           bridge="pycri-t3", ipam_data_dir="/tmp/x", name="t3")
    ipam = net.plugins[0]["ipam"]
    assert ipam["ranges"] == [[{"subnet": "10.250.3.0/24"}], [{"subnet": "fd00:250:3::/64"}]]
    assert {"dst": "::/0"} in ipam["routes"]
    assert ipam["dataDir"] == "/tmp/x"
    assert net.plugins[0]["bridge"] == "pycri-t3" and net.name == "t3"
    # the shipped file itself is untouched by parameters
    assert default_conflist().plugins[0]["ipam"]["ranges"] == [[{"subnet": "10.88.0.0/16"}]]


@pytest.mark.parametrize(
    "kwargs",
    [{"subnet": "10.0.0.1/24"}, {"subnet": "nonsense"}, {"subnet": "fd00::/64"},
     {"subnet_v6": "10.0.0.0/8"}, {"subnet": "10.0.0.0/31"}, {"bridge": "a" * 16},
     {"bridge": "a/b"}],
)
def test_default_conflist_rejects_bad_parameters(kwargs):
    with pytest.raises(errors.InvalidArgument):
        default_conflist(**kwargs)


def test_unreadable_dir_entry_is_ignored(tmp_path):
    os.mkdir(tmp_path / "10-dir.conflist")  # a directory with a config-like name
    write(tmp_path / "20.conflist", BRIDGE_LIST)
    assert choose_network(str(tmp_path), None).name == "net-a"
