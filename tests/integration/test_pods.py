"""Pod sandboxes through the real gRPC API: namespaces, network, pod files, sysctls, ids, lists."""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.cri_client import rpc_error
from tests.support.daemon import PycriDaemon


def _nsenter(*args: str) -> str:
    return subprocess.run(["nsenter", *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout.strip()


@pytest.fixture
def pod_ids(cri):  # type: ignore[no-untyped-def]
    """Pods a test creates; all stopped and removed afterwards, whatever happened."""
    ids: list[str] = []
    yield ids
    pods.remove_all(cri, ids)


def _leftovers_for(daemon: PycriDaemon, pod_id: str) -> list[str]:
    found = []
    for p in (daemon.state / "ns" / pod_id, daemon.state / "netns" / pod_id,
              daemon.root / "pods" / pod_id,
              daemon.state / "shims" / pod_id, daemon.state / "shims" / pod_id[:32]):
        if p.exists():
            found.append(str(p))
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [line.split()[4] for line in mounts.splitlines() if pod_id in line]
    return found


def test_pod_gets_its_own_namespaces(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    pod_id = pods.run_pod(cri)
    pod_ids.append(pod_id)
    info = pods.info(cri, pod_id)
    pause = info["pid"]
    assert "pycri-pau" in Path(f"/proc/{pause}/comm").read_text()  # (memfd:)pycri-pause
    for ns in ("net", "ipc", "uts"):
        assert pods.ns_inode(pause, ns) != pods.ns_inode("self", ns), ns
    # pid mode CONTAINER (the default): the pause-holder stays in the host PID namespace
    assert pods.ns_inode(pause, "pid") == pods.ns_inode("self", "pid")
    # the pinned namespace is the pause-holder's
    netns = info["netnsPath"]
    assert os.stat(netns).st_ino == os.stat(f"/proc/{pause}/ns/net").st_ino
    assert info["namespacePaths"]["net"] == netns


def test_host_network_pod_shares_host_namespaces(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config(host_network=True, ipc=api_pb2.NODE)
    pod_id = pods.run_pod(cri, cfg)
    pod_ids.append(pod_id)
    resp = pods.status(cri, pod_id, verbose=True)
    info = json.loads(resp.info["info"])
    # nothing to hold: no pause-holder, the shim itself lives in the host's namespaces
    assert info["pid"] == 0 and info["namespacePaths"] == {}
    for ns in ("net", "uts", "ipc", "pid"):
        assert pods.ns_inode(info["shimPid"], ns) == pods.ns_inode("self", ns), ns
    assert resp.status.network.ip == ""
    opts = resp.status.linux.namespaces.options
    assert opts.network == api_pb2.NODE and opts.ipc == api_pb2.NODE
    assert info["netnsPath"] == ""
    assert info["cniResult"] is None
    hostname = Path(info["podDir"], "hostname").read_text().strip()
    assert hostname == os.uname().nodename


def test_pid_namespace_pod_makes_pause_pid_1(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    pod_id = pods.run_pod(cri, pods.pod_config(pid=api_pb2.POD))
    pod_ids.append(pod_id)
    pause = pods.info(cri, pod_id)["pid"]
    assert pods.ns_inode(pause, "pid") != pods.ns_inode("self", "pid")
    assert pods.nspid_chain(pause)[-1] == 1
    opts = pods.status(cri, pod_id).status.linux.namespaces.options
    assert opts.pid == api_pb2.POD


def test_pod_ip_reachable_from_host_and_other_pod(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    a = pods.run_pod(cri)
    pod_ids.append(a)
    b = pods.run_pod(cri)
    pod_ids.append(b)
    ip_a = pods.status(cri, a).status.network.ip
    ip_b = pods.status(cri, b).status.network.ip
    assert ip_a.startswith("10.233.") and ip_b.startswith("10.233.") and ip_a != ip_b
    netns_a, netns_b = pods.info(cri, a)["netnsPath"], pods.info(cri, b)["netnsPath"]
    with pods.PodListener(netns_b, count=2) as listener:
        assert pods.tcp_hello(ip_b) == b"hello from pod\n"          # host -> pod
        assert pods.tcp_hello_from_netns(netns_a, ip_b) == "hello from pod"  # pod -> pod
        listener.proc.wait(timeout=10)
    # the pod's own interfaces: eth0 with its IP, lo up
    out = pods.in_netns(netns_a, "ip", "-o", "addr").stdout
    assert f"eth0    inet {ip_a}/" in out.replace("\\", "") or f"inet {ip_a}/" in out
    assert "lo    inet 127.0.0.1/8" in out.replace("\\", "") or "inet 127.0.0.1/8" in out


def test_resolv_conf_hostname_and_hosts(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    dns = api_pb2.DNSConfig(servers=["10.96.0.10", "10.96.0.11"],
                            searches=["ns.svc.cluster.local", "svc.cluster.local"],
                            options=["ndots:5", "timeout:2"])
    pod_id = pods.run_pod(cri, pods.pod_config(hostname="web-0", dns=dns))
    pod_ids.append(pod_id)
    info = pods.info(cri, pod_id)
    pod_dir = Path(info["podDir"])
    assert (pod_dir / "resolv.conf").read_text() == (
        "search ns.svc.cluster.local svc.cluster.local\n"
        "nameserver 10.96.0.10\nnameserver 10.96.0.11\noptions ndots:5 timeout:2\n")
    assert (pod_dir / "hostname").read_text() == "web-0\n"
    ip = pods.status(cri, pod_id).status.network.ip
    hosts = (pod_dir / "hosts").read_text().splitlines()
    assert "127.0.0.1\tlocalhost" in hosts and f"{ip}\tweb-0" in hosts
    # the UTS namespace carries the hostname
    r = pods.in_netns(info["netnsPath"], "true")
    assert r.returncode == 0
    uts = f"/proc/{info['pid']}/ns/uts"
    out = _nsenter(f"--uts={uts}", "hostname")
    assert out == "web-0"


def test_resolv_conf_defaults_to_host(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    pod_id = pods.run_pod(cri)
    pod_ids.append(pod_id)
    pod_dir = Path(pods.info(cri, pod_id)["podDir"])
    assert (pod_dir / "resolv.conf").read_text() == Path("/etc/resolv.conf").read_text()


def test_sysctls_applied_inside_not_on_host(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    host_range = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    host_shmmni = Path("/proc/sys/kernel/shmmni").read_text()
    sysctls = {"net.ipv4.ip_local_port_range": "20000 20999", "kernel.shmmni": "1234",
               "net/ipv4/tcp_syncookies": "0"}
    pod_id = pods.run_pod(cri, pods.pod_config(sysctls=sysctls))
    pod_ids.append(pod_id)
    info = pods.info(cri, pod_id)
    netns = info["netnsPath"]
    got = pods.in_netns(netns, "cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout
    assert got.split() == ["20000", "20999"]
    assert pods.in_netns(netns, "cat", "/proc/sys/net/ipv4/tcp_syncookies").stdout.strip() == "0"
    ipc = info["namespacePaths"]["ipc"]
    got = _nsenter(f"--ipc={ipc}", "cat", "/proc/sys/kernel/shmmni")
    assert got == "1234"
    assert Path("/proc/sys/net/ipv4/ip_local_port_range").read_text() == host_range
    assert Path("/proc/sys/kernel/shmmni").read_text() == host_shmmni


@pytest.mark.parametrize("sysctls,host_network", [
    ({"kernel.panic": "1"}, False),                                   # not namespaced
    ({"vm.overcommit_memory": "1"}, False),
    ({"kernel.hostname": "evil"}, False),
    ({"net.ipv4.ip_forward": "1+kernel.core_pattern=|/tmp/x"}, False),  # CVE-2022-0811
    ({"kernel.shm_rmid_forced": "1=kernel.core_pattern"}, False),
    ({"net.ipv4.ip_forward": "1\nkernel.core_pattern=x"}, False),
    ({"net.ipv4.ip_forward": ""}, False),
    ({"net.ipv4.ip_forward=1": "1"}, False),
    ({"net.ipv4/../../kernel/core_pattern": "x"}, False),
    ({"net.ipv4.ip_forward": "1"}, True),                             # host network
])
def test_bad_sysctls_rejected(cri, sysctls, host_network) -> None:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config(sysctls=sysctls, host_network=host_network)
    err = rpc_error(pods.run_pod, cri, cfg)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sysctl" in err.details()
    assert not pods.list_pods(cri, api_pb2.PodSandboxFilter(
        label_selector={})) or all(p.metadata.name != cfg.metadata.name
                                   for p in pods.list_pods(cri))


def test_runtime_handler(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    err = rpc_error(pods.run_pod, cri, pods.pod_config(), "no-such-runtime")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-runtime" in err.details()
    pod_id = pods.run_pod(cri, pods.pod_config(), "pycri")
    pod_ids.append(pod_id)
    assert pods.status(cri, pod_id).status.runtime_handler == "pycri"


def test_missing_metadata_rejected(cri) -> None:  # type: ignore[no-untyped-def]
    err = rpc_error(cri.RunPodSandbox, api_pb2.RunPodSandboxRequest(
        config=api_pb2.PodSandboxConfig(hostname="x")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "metadata" in err.details()
    cfg = pods.pod_config()
    cfg.metadata.uid = ""
    err = rpc_error(pods.run_pod, cri, cfg)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "uid" in err.details()


def test_status_fields(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config(labels={"app": "web", "tier": "front"},
                          annotations={"note": "hello"}, pid=api_pb2.POD)
    pod_id = pods.run_pod(cri, cfg)
    pod_ids.append(pod_id)
    assert len(pod_id) == 64 and all(c in "0123456789abcdef" for c in pod_id)
    resp = pods.status(cri, pod_id, verbose=True)
    st = resp.status
    assert st.id == pod_id and st.metadata == cfg.metadata
    assert st.state == api_pb2.SANDBOX_READY
    assert st.created_at > 0 and resp.timestamp >= st.created_at
    assert dict(st.labels) == {"app": "web", "tier": "front"}
    assert dict(st.annotations) == {"note": "hello"}
    assert st.linux.namespaces.options.pid == api_pb2.POD
    assert st.linux.namespaces.options.network == api_pb2.POD
    info = json.loads(resp.info["info"])
    assert info["pid"] > 0 and info["shimPid"] > 0
    assert Path(f"/proc/{info['shimPid']}/comm").read_text().strip() == "pycri-monitor"
    assert info["config"]["metadata"]["name"] == cfg.metadata.name
    assert info["cniResult"]["ips"][0]["address"].startswith(st.network.ip + "/")
    assert pods.status(cri, pod_id).info == {}


def test_stop_and_remove_are_idempotent(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    pod_id = pods.run_pod(cri)
    info = pods.info(cri, pod_id)
    pods.stop(cri, pod_id)
    assert pods.status(cri, pod_id).status.state == api_pb2.SANDBOX_NOTREADY
    assert pods.wait_until(lambda: not os.path.exists(f"/proc/{info['shimPid']}/comm")
                           or Path(f"/proc/{info['shimPid']}/comm").read_text().strip()
                           != "pycri-shim")
    assert not os.path.exists(info["netnsPath"])
    pods.stop(cri, pod_id)
    pods.remove(cri, pod_id)
    pods.remove(cri, pod_id)
    assert _leftovers_for(daemon, pod_id) == []
    err = rpc_error(pods.status, cri, pod_id)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    pods.stop(cri, pod_id)      # unknown: success, as kubelet and critest expect
    pods.remove(cri, "0" * 64)


def test_remove_without_stop_cleans_up(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    pod_id = pods.run_pod(cri, pods.pod_config(pid=api_pb2.POD))
    pods.remove(cri, pod_id)
    assert _leftovers_for(daemon, pod_id) == []
    assert all(p.id != pod_id for p in pods.list_pods(cri))


def test_short_id_prefixes(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    pod_id = pods.run_pod(cri)
    short = pod_id[:12]
    assert pods.status(cri, short).status.id == pod_id
    pods.stop(cri, short)
    assert pods.status(cri, pod_id).status.state == api_pb2.SANDBOX_NOTREADY
    pods.remove(cri, short)
    assert rpc_error(pods.status, cri, pod_id).code() == grpc.StatusCode.NOT_FOUND


def test_list_filters_and_stream(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    a = pods.run_pod(cri, pods.pod_config(labels={"app": "a", "env": "test"}))
    b = pods.run_pod(cri, pods.pod_config(labels={"app": "b", "env": "test"}))
    pod_ids += [a, b]
    pods.stop(cri, b)
    mine = {a, b}

    def ids(flt: api_pb2.PodSandboxFilter | None = None) -> set[str]:
        return {p.id for p in pods.list_pods(cri, flt)} & mine

    assert ids() == {a, b}
    assert ids(api_pb2.PodSandboxFilter(id=a)) == {a}
    assert ids(api_pb2.PodSandboxFilter(id=b[:10])) == {b}
    ready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
    notready = api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_NOTREADY)
    assert ids(api_pb2.PodSandboxFilter(state=ready)) == {a}
    assert ids(api_pb2.PodSandboxFilter(state=notready)) == {b}
    assert ids(api_pb2.PodSandboxFilter(label_selector={"env": "test"})) == {a, b}
    assert ids(api_pb2.PodSandboxFilter(label_selector={"app": "b", "env": "test"})) == {b}
    assert ids(api_pb2.PodSandboxFilter(label_selector={"app": "c"})) == set()
    item = next(p for p in pods.list_pods(cri) if p.id == a)
    assert item.labels["app"] == "a" and item.created_at > 0 and item.metadata.name
    streamed = set()
    for resp in cri.runtime.StreamPodSandboxes(api_pb2.StreamPodSandboxesRequest(
            filter=api_pb2.PodSandboxFilter(label_selector={"env": "test"}))):
        streamed |= {p.id for p in resp.pod_sandboxes}
    assert streamed & mine == {a, b}


def test_kubelet_retry_after_success_gets_same_pod(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config()
    first = pods.run_pod(cri, cfg)
    pod_ids.append(first)
    assert pods.run_pod(cri, cfg) == first
    assert len([p for p in pods.list_pods(cri) if p.metadata.name == cfg.metadata.name]) == 1
    # same name, namespace, uid and attempt but a different pod: the name is reserved
    other = api_pb2.PodSandboxConfig()
    other.CopyFrom(cfg)
    other.hostname = "someone-else"
    err = rpc_error(pods.run_pod, cri, other)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert first in err.details()
    # the next attempt is a new pod
    nxt = api_pb2.PodSandboxConfig()
    nxt.CopyFrom(cfg)
    nxt.metadata.attempt = 1
    second = pods.run_pod(cri, nxt)
    pod_ids.append(second)
    assert second != first


def test_twenty_pods_concurrently(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        ids = list(pool.map(lambda _: pods.run_pod(cri), range(20)))
    try:
        assert len(set(ids)) == 20
        ips = [pods.status(cri, i).status.network.ip for i in ids]
        assert len(set(ips)) == 20 and all(ip.startswith("10.233.") for ip in ips)
        assert all(pods.status(cri, i).status.state == api_pb2.SANDBOX_READY for i in ids)
    finally:
        pods.remove_all(cri, ids, parallel=20)
    for pod_id in ids:
        assert _leftovers_for(daemon, pod_id) == []


def test_network_ready_status(cri) -> None:  # type: ignore[no-untyped-def]
    conditions = {c.type: c for c in cri.Status(api_pb2.StatusRequest()).status.conditions}
    assert conditions["NetworkReady"].status is True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_host_port_reaches_pod_from_loopback(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    host_port = _free_port()
    pm = [api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=8080, host_port=host_port)]
    pod_id = pods.run_pod(cri, pods.pod_config(port_mappings=pm))
    pod_ids.append(pod_id)
    with pods.PodListener(pods.info(cri, pod_id)["netnsPath"]):
        assert pods.tcp_hello("127.0.0.1", host_port) == b"hello from pod\n"


def test_pod_cgroup_created_and_removed(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config()
    cfg.linux.resources.memory_limit_in_bytes = 256 << 20
    cfg.linux.resources.cpu_shares = 512
    cfg.linux.overhead.memory_limit_in_bytes = 32 << 20
    cfg.linux.overhead.cpu_shares = 10
    pod_id = pods.run_pod(cri, cfg)
    info = pods.info(cri, pod_id)
    path = info["cgroupPath"]
    assert path == f"{daemon.cgroup_parent}/pod{pod_id}"
    created = [p for p in Path("/sys/fs/cgroup").glob(f"*{path}") if p.is_dir()]
    assert {p.parent.parent.name for p in created} >= {"memory", "cpu", "pids"}
    limit = Path(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes").read_text()
    assert int(limit) == (256 + 32) << 20
    assert Path(f"/sys/fs/cgroup/cpu{path}/cpu.shares").read_text().strip() == "522"
    pods.stop_and_remove(cri, pod_id)
    assert not any(p.exists() for p in created)


def test_kubelet_cgroup_parent_is_used_and_kept(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    parent = f"{daemon.cgroup_parent}-kubelet/burstable/podabc"
    pod_id = pods.run_pod(cri, pods.pod_config(cgroup_parent=parent))
    try:
        assert pods.info(cri, pod_id)["cgroupPath"] == parent
        assert Path(f"/sys/fs/cgroup/memory{parent}").is_dir()
    finally:
        pods.stop_and_remove(cri, pod_id)
        # kubelet owns the pod cgroup it named: pycri leaves it to kubelet (as containerd does)
        assert Path(f"/sys/fs/cgroup/memory{parent}").is_dir()
        for top in Path("/sys/fs/cgroup").iterdir():
            for sub in ("/burstable/podabc", "/burstable", ""):
                p = Path(f"{top}{daemon.cgroup_parent}-kubelet{sub}")
                if p.is_dir():
                    p.rmdir()


def test_sysctl_the_kernel_refuses_fails_cleanly(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    cfg = pods.pod_config(sysctls={"net.ipv4.pycri_no_such_sysctl": "1"})
    err = rpc_error(pods.run_pod, cri, cfg)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "pycri_no_such_sysctl" in err.details()
    listed = pods.list_pods(cri)
    assert all(p.metadata.name != cfg.metadata.name for p in listed)
    ids = {p.id for p in listed}
    for kind in (daemon.state / "ns", daemon.state / "netns", daemon.root / "pods"):
        assert set(os.listdir(kind)) <= ids, kind
    assert not [p for p in Path(f"/sys/fs/cgroup/memory{daemon.cgroup_parent}").glob("pod*")
                if p.name[3:] not in ids]
