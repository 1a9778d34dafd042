"""Pod namespace selection and sysctl checks (pure logic)."""
from __future__ import annotations

import pytest

from pycri_common.errors import InvalidArgument
from runtime.pod_spec import PodSpec
from runtime.shim import namespaces as ns


def pod(network: str = "pod", ipc: str = "pod", pid: str = "container") -> PodSpec:
    return PodSpec.from_json({"pod_id": "p", "shim_dir": "/run/s", "ns_dir": "/run/n",
                              "namespaces": {"network": network, "ipc": ipc, "pid": pid}})


def test_namespace_types_per_mode() -> None:
    assert ns.pod_namespace_types(pod()) == ["net", "ipc", "uts"]
    assert ns.pod_namespace_types(pod(pid="pod")) == ["net", "ipc", "uts", "pid"]
    assert ns.pod_namespace_types(pod(network="node")) == ["ipc"]
    assert ns.pod_namespace_types(pod(network="node", ipc="node", pid="node")) == []


def test_bad_mode_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"namespaces\.pid"):
        pod(pid="target")


def test_sysctl_paths() -> None:
    assert ns.sysctl_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert ns.sysctl_path("net/ipv4/conf/eth0.100/rp_filter") == \
        "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    for bad in ("net/../../etc", "", "net..x"):
        with pytest.raises(ValueError):
            ns.sysctl_path(bad)


def test_sysctls_must_be_in_a_pod_namespace() -> None:
    ns.check_sysctls({"net.ipv4.ip_forward": "1", "kernel.shmmax": "100"}, ["net", "ipc", "uts"])
    with pytest.raises(ValueError, match="host's"):
        ns.check_sysctls({"net.ipv4.ip_forward": "1"}, ["ipc"])
    with pytest.raises(ValueError, match="not namespaced"):
        ns.check_sysctls({"kernel.panic": "1"}, ["net", "ipc", "uts"])
    with pytest.raises(ValueError, match="invalid value"):
        ns.check_sysctls({"kernel.shmmax": "1\nkernel.panic=1"}, ["ipc"])
