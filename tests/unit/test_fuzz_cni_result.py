"""Fuzzing the parsing of CNI ADD results (cni.result.parse_result), the JSON object a plugin
printed on stdout (cni.invoke decodes it and makes sure it is an object).

Whatever the object holds, parse_result returns a CniResult whose pod IPs are plain IP
address strings and whose gateway is a string or None, or raises CniError (a PycriError).
Seeds are results of the reference bridge plugin (with host-local IPAM) for each result
version kubelets meet: 1.0.0, 0.4.0, 0.3.1 and the old 0.2.0 ip4/ip6 shape.
"""
from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from cni.errors import CniError
from cni.result import parse_result
from tests.support.fuzz import fuzz_settings, json_values, mutated

BRIDGE_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "3a:9c:5f:1d:22:7e"},
        {"name": "veth8c1f3f0d", "mac": "0e:49:5d:2b:8a:41"},
        {"name": "eth0", "mac": "9a:61:0c:b4:4e:13",
         "sandbox": "/var/run/netns/cni-5b4f8e5e-9f0b-4a86-6d3c-0a2d2f5d1c8e"},
    ],
    "ips": [{"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}],
    "dns": {},
}
BRIDGE_040 = {
    "cniVersion": "0.4.0",
    "interfaces": BRIDGE_100["interfaces"],
    "ips": [{"version": "4", "interface": 2, "address": "10.88.0.6/16", "gateway": "10.88.0.1"},
            {"version": "6", "interface": 2, "address": "fd00:88::6/64", "gateway": "fd00:88::1"}],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
    "dns": {},
}
BRIDGE_031 = {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.22.0.9/16"}]}
BRIDGE_020 = {"cniVersion": "0.2.0",
              "ip4": {"ip": "10.22.0.7/16", "gateway": "10.22.0.1",
                      "routes": [{"dst": "0.0.0.0/0"}]},
              "dns": {}}
SAMPLES: list[dict[str, Any]] = [BRIDGE_100, BRIDGE_040, BRIDGE_031, BRIDGE_020]
# values of the wrong type or shape, the likeliest plugin mistakes, and a little random JSON
_ODD: tuple[Any, ...] = (
    None, True, 0, -1, 2, 2**64, 167772161, 1.5, float("inf"), "", "x", "eth0", "10.0.0.1",
    "10.0.0.1/8", "fd00::1/64", "10.0.0.1/33", "1.2.3.4.5/8", [], {}, [1], ["a"], [{}],
    {"name": "eth0"}, {"a": 1})
_VALUES = st.sampled_from(_ODD) | json_values(4)


@st.composite
def _replaced(draw: st.DrawFn) -> dict[str, Any]:
    """A sample with some of its values (at any depth) replaced by other JSON, or removed."""
    doc = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        node: Any = doc
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, dict | list) and child and draw(st.booleans()):
                node = child
                continue
            if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
                del node[key]
            else:
                node[key] = copy.deepcopy(draw(_VALUES))  # _ODD holds lists and dicts
            break
    return doc


def _check(raw: Any) -> None:
    try:
        result = parse_result(raw, "pycri", "eth0")
    except CniError:
        return
    for ip in result.ips:
        assert isinstance(ip, str) and str(ipaddress.ip_address(ip)) == ip
    assert result.gateway is None or isinstance(result.gateway, str)
    assert result.primary_ip is None or result.primary_ip in result.ips


@fuzz_settings(120)
@given(_replaced())
@example(BRIDGE_100)
@example(BRIDGE_040)
@example(BRIDGE_031)
@example(BRIDGE_020)
@example({**BRIDGE_100, "interfaces": 5})
@example({**BRIDGE_100, "routes": 7})
@example({**BRIDGE_100, "ips": [{"interface": 2, "address": 167772161}]})   # an int: 10.0.0.1
@example({**BRIDGE_100, "ips": [{"interface": 2, "address": "10.88.0.5/16", "gateway": [1]}]})
@example({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/8", "routes": 3}})
def test_result_values_of_any_type(raw: dict[str, Any]) -> None:
    _check(raw)


@fuzz_settings(250)
@given(mutated([json.dumps(s).encode() for s in SAMPLES]))
def test_result_text_mutations(text: bytes) -> None:
    """What a plugin printed, mutated; cni.invoke only hands on a JSON object."""
    try:
        raw = json.loads(text)
    except ValueError:
        return
    if isinstance(raw, dict):
        _check(raw)
