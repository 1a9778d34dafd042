"""Result parsing, capability args, CNI_ARGS, plugin stdin derivation and the cache."""
from __future__ import annotations

import json
import os

import pytest

from cni import args as cniargs
from cni.cache import CacheEntry, ResultCache
from cni.errors import CniError
from cni.result import parse_result
from pycri_common import errors

RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:00:00:00:00:01"},
        {"name": "veth1", "mac": "aa:00:00:00:00:02"},
        {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": "/run/netns/x"},
    ],
    "ips": [
        {"interface": 2, "address": "fd00::5/64", "gateway": "fd00::1"},
        {"interface": 2, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"interface": 0, "address": "10.1.0.1/24"},
    ],
    "routes": [{"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.1.0.10"]},
}


def test_parse_100_primary_ipv4_then_ipv6_and_only_pod_interface():
    r = parse_result(RESULT_100, "n", "eth0")
    assert r.ips == ["10.1.0.5", "fd00::5"]
    assert r.primary_ip == "10.1.0.5"
    assert r.gateway == "10.1.0.1"
    assert r.dns == {"nameservers": ["10.1.0.10"]}
    assert len(r.ip_configs) == 3 and r.raw is RESULT_100


def test_parse_ipv6_only():
    raw = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
           "ips": [{"interface": 0, "address": "fd00::7/64"}]}
    r = parse_result(raw, "n", "eth0")
    assert r.ips == ["fd00::7"] and r.gateway is None


def test_parse_031_with_version_field_and_no_interface_index():
    raw = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.2.0.9/16"}]}
    assert parse_result(raw, "n", "eth0").ips == ["10.2.0.9"]


def test_parse_020_converted():
    raw = {"cniVersion": "0.2.0", "ip4": {"ip": "10.3.0.4/24", "gateway": "10.3.0.1",
                                          "routes": [{"dst": "0.0.0.0/0"}]},
           "ip6": {"ip": "fd00:3::4/64"}}
    r = parse_result(raw, "n", "eth0")
    assert r.ips == ["10.3.0.4", "fd00:3::4"] and r.gateway == "10.3.0.1"
    assert r.routes == [{"dst": "0.0.0.0/0"}]


def test_parse_interface_without_sandbox_matched_by_name():
    raw = {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
           "ips": [{"interface": 0, "address": "10.4.0.2/24"}]}
    assert parse_result(raw, "n", "eth0").ips == ["10.4.0.2"]


def test_parse_rejects_bad_address():
    with pytest.raises(CniError, match="invalid IP address"):
        parse_result({"cniVersion": "1.0.0", "ips": [{"address": "banana"}]}, "n", "eth0")


def test_parse_empty_result_has_no_ips():
    r = parse_result({"cniVersion": "1.0.0"}, "n", "eth0")
    assert r.ips == [] and r.primary_ip is None


def test_cni_args_order_and_format():
    meta = cniargs.PodMeta.from_mapping({"name": "web", "namespace": "prod", "uid": "u-1"})
    assert cniargs.format_cni_args(cniargs.cni_args("abc", meta)) == (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;"
        "K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
    )


@pytest.mark.parametrize("bad", [{"name": "a;b"}, {"namespace": "x=y"}, {"uid": 5},
                                 {"name": "a b"}])
def test_pod_meta_rejects_separators(bad):
    with pytest.raises(errors.InvalidArgument):
        cniargs.PodMeta.from_mapping(bad)


@pytest.mark.parametrize("cid", ["", "a/b", "-x", "a:b", "a b"])
def test_container_id_validation(cid):
    with pytest.raises(errors.InvalidArgument):
        cniargs.validate_container_id(cid)


@pytest.mark.parametrize("ifname", ["", ".", "..", "a/b", "a:b", "a b", "x" * 16])
def test_ifname_validation(ifname):
    with pytest.raises(errors.InvalidArgument):
        cniargs.validate_ifname(ifname)


def test_port_mappings_from_cri_and_cni_keys():
    caps = cniargs.capability_args([
        {"container_port": 80, "host_port": 8080, "protocol": "TCP"},
        {"containerPort": 53, "hostPort": 5353, "protocol": 1, "hostIP": "127.0.0.1"},
        {"container_port": 9000, "host_port": 0},  # no host port: dropped
        {"container_port": 7, "host_port": 7007, "protocol": 2},
    ])
    assert caps["portMappings"] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
        {"hostPort": 7007, "containerPort": 7, "protocol": "sctp"},
    ]


@pytest.mark.parametrize(
    "mapping",
    [{"container_port": 80, "host_port": 70000}, {"container_port": "80", "host_port": 1},
     {"container_port": 0, "host_port": 80}, {"container_port": 1, "host_port": 2,
                                              "protocol": "icmp"},
     {"container_port": 1, "host_port": 2, "host_ip": "localhost"}],
)
def test_port_mappings_rejected(mapping):
    with pytest.raises(errors.InvalidArgument):
        cniargs.capability_args([mapping])


def test_plugin_config_injects_name_version_prev_and_declared_capabilities_only():
    caps = {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1}}
    plugin = {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False},
              "runtimeConfig": {"stale": 1}}
    conf = cniargs.plugin_config(plugin, "net", "1.0.0", {"cniVersion": "1.0.0"}, caps)
    assert conf["name"] == "net" and conf["cniVersion"] == "1.0.0"
    assert conf["prevResult"] == {"cniVersion": "1.0.0"}
    assert conf["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    bare = cniargs.plugin_config({"type": "bridge", "prevResult": {"x": 1}}, "net", "1.0.0",
                                 None, caps)
    assert "prevResult" not in bare and "runtimeConfig" not in bare


def _entry(cid: str, net: str = "n", result: dict | None = None) -> CacheEntry:
    return CacheEntry(cid, net, "eth0", "/ns", {"cniVersion": "1.0.0", "name": net,
                      "plugins": [{"type": "x"}]}, [["K", "V"]], {"portMappings": []}, result)


def test_cache_roundtrip_listing_and_delete(tmp_path):
    cache = ResultCache(str(tmp_path / "c"))
    assert cache.load("p1", "n", "eth0") is None
    assert cache.entries_for("p1") == [] and cache.container_ids() == set()
    cache.save(_entry("p1", result={"cniVersion": "1.0.0"}))
    cache.save(_entry("p1", net="other"))
    cache.save(_entry("p10"))
    got = cache.load("p1", "n", "eth0")
    assert got == _entry("p1", result={"cniVersion": "1.0.0"})
    assert [e.network for e in cache.entries_for("p1")] == ["n", "other"]
    assert cache.container_ids() == {"p1", "p10"}
    cache.delete("p1", "n", "eth0")
    cache.delete("p1", "n", "eth0")  # idempotent
    assert [e.network for e in cache.entries_for("p1")] == ["other"]
    assert not [n for n in os.listdir(tmp_path / "c") if n.startswith(".tmp-")]


def test_cache_ignores_foreign_or_torn_files(tmp_path):
    cache = ResultCache(str(tmp_path))
    (tmp_path / "p1:n:eth0.json").write_text('{"kind": "pycriCniCacheV1", "containe')
    (tmp_path / "p1:m:eth0.json").write_text(json.dumps({"kind": "other"}))
    assert cache.load("p1", "n", "eth0") is None
    assert cache.entries_for("p1") == []
