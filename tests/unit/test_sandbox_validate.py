"""RunPodSandbox request validation (pure logic): handlers, metadata, namespaces, sysctls."""
from __future__ import annotations

import pytest

from cri_server.sandboxes import pod_cgroup, podfiles, validate
from proto import api_pb2
from pycri_common.errors import InvalidArgument, NotFound


def _request(**linux_kw: object) -> api_pb2.RunPodSandboxRequest:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="web", namespace="default", uid="u-1",
                                            attempt=2))
    for key, value in linux_kw.items():
        if key == "sysctls":
            cfg.linux.sysctls.update(value)  # type: ignore[arg-type]
        elif key == "network":
            cfg.linux.security_context.namespace_options.network = value  # type: ignore[assignment]
        elif key == "pid":
            cfg.linux.security_context.namespace_options.pid = value  # type: ignore[assignment]
        elif key == "ipc":
            cfg.linux.security_context.namespace_options.ipc = value  # type: ignore[assignment]
    return api_pb2.RunPodSandboxRequest(config=cfg)


def test_plan_defaults() -> None:
    plan = validate.plan(_request(), ["pycri"], "node1")
    assert plan.name_key == "default/web/u-1/2"
    assert plan.namespaces == {"network": "pod", "ipc": "pod", "pid": "pod"}
    assert plan.hostname == "web" and not plan.host_network


def test_host_network_hostname_is_the_nodes() -> None:
    plan = validate.plan(_request(network=api_pb2.NODE), ["pycri"], "node1")
    assert plan.host_network and plan.hostname == "node1"


def test_unknown_handler() -> None:
    req = _request()
    req.runtime_handler = "kata"
    with pytest.raises(NotFound, match="kata"):
        validate.plan(req, ["pycri"], "n")
    req.runtime_handler = "pycri"
    assert validate.plan(req, ["pycri"], "n").runtime_handler == "pycri"


@pytest.mark.parametrize("mode_field,mode", [("network", api_pb2.CONTAINER),
                                             ("ipc", api_pb2.CONTAINER),
                                             ("pid", api_pb2.TARGET)])
def test_bad_namespace_modes(mode_field: str, mode: int) -> None:
    with pytest.raises(InvalidArgument, match=mode_field):
        validate.plan(_request(**{mode_field: mode}), [], "n")


def _userns_request(mode: int = api_pb2.POD, uids: list[tuple[int, int, int]] | None = None,
                    gids: list[tuple[int, int, int]] | None = None,
                    **linux_kw: object) -> api_pb2.RunPodSandboxRequest:
    req = _request(**linux_kw)
    u = req.config.linux.security_context.namespace_options.userns_options
    u.mode = mode  # type: ignore[assignment]
    for target, maps in ((u.uids, uids), (u.gids, gids)):
        for c, h, n in maps if maps is not None else [(0, 65536, 65536)]:
            target.add(container_id=c, host_id=h, length=n)
    return req


def test_user_namespace_pod_plan() -> None:
    plan = validate.plan(_userns_request(uids=[(0, 131072, 65536)], gids=[(0, 1000, 100000)]),
                         [], "n")
    assert plan.userns == {"mode": "pod", "uids": [[0, 131072, 65536]],
                           "gids": [[0, 1000, 100000]]}


def test_user_namespace_node_is_the_hosts() -> None:
    assert validate.plan(_request(), [], "n").userns == {}
    assert validate.plan(_userns_request(api_pb2.NODE, uids=[], gids=[]), [], "n").userns == {}
    with pytest.raises(InvalidArgument, match="NODE"):
        validate.plan(_userns_request(api_pb2.NODE), [], "n")


@pytest.mark.parametrize("uids,gids,match", [
    ([(0, 65536, 1000), (1000, 200000, 10)], None, "exactly one"),   # two ranges
    ([], None, "exactly one"),
    ([(1, 65536, 65536)], None, "container ID 0"),                   # 0 unmapped
    (None, [(0, 65536, 0)], "length"),                                # empty range
    ([(0, 4294967295 - 10, 65536)], None, "host_id"),                 # past the last ID
    ([(0, 65536, 4294967295)], None, "past the last ID"),
])
def test_user_namespace_bad_mappings(uids: list[tuple[int, int, int]] | None,
                                     gids: list[tuple[int, int, int]] | None, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        validate.plan(_userns_request(uids=uids, gids=gids), [], "n")


@pytest.mark.parametrize("mode", [api_pb2.CONTAINER, api_pb2.TARGET])
def test_user_namespace_container_and_target_modes_refused(mode: int) -> None:
    with pytest.raises(InvalidArgument, match="not supported"):
        validate.plan(_userns_request(mode), [], "n")


def test_user_namespace_not_with_privileged_or_host_namespaces() -> None:
    req = _userns_request()
    req.config.linux.security_context.privileged = True
    with pytest.raises(InvalidArgument, match="privileged"):
        validate.plan(req, [], "n")
    for field in ("network", "ipc", "pid"):
        with pytest.raises(InvalidArgument, match=field):
            validate.plan(_userns_request(**{field: api_pb2.NODE}), [], "n")  # type: ignore[arg-type]


def test_metadata_required() -> None:
    with pytest.raises(InvalidArgument, match="metadata"):
        validate.plan(api_pb2.RunPodSandboxRequest(config=api_pb2.PodSandboxConfig()), [], "n")
    req = _request()
    req.config.metadata.name = "a/b"
    with pytest.raises(InvalidArgument, match="name"):
        validate.plan(req, [], "n")


@pytest.mark.parametrize("name,value", [
    ("net.ipv4.ip_forward", "1"), ("net.ipv4.ip_local_port_range", "1024 65000"),
    ("kernel.sem", "250 32000 100 128"), ("kernel.shmmax", "1000"), ("kernel.msgmax", "8192"),
    ("fs.mqueue.msg_max", "10"), ("net/ipv4/conf/eth0.100/forwarding", "1"),
])
def test_good_sysctls(name: str, value: str) -> None:
    assert validate.plan(_request(sysctls={name: value}), [], "n").sysctls == {name: value}


@pytest.mark.parametrize("name,value,why", [
    ("kernel.panic", "1", "not namespaced"),
    ("kernel.hostname", "x", "not namespaced"),
    ("vm.swappiness", "1", "not namespaced"),
    ("net.ipv4.ip_forward", "1+kernel.core_pattern=x", "single value"),
    ("net.ipv4.ip_forward", "1=2", "single value"),
    ("net.ipv4.ip_forward", "1\n2", "single value"),
    ("net.ipv4.ip_forward", " 1", "single value"),
    ("net.ipv4.ip_forward", "", "single value"),
    ("net.ipv4.ip_forward=1", "1", "name"),
    ("net..ipv4", "1", "name"),
    ("net/../kernel/panic", "1", "name"),
    ("net.ipv4.conf+kernel", "1", "name"),
])
def test_bad_sysctls(name: str, value: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        validate.plan(_request(sysctls={name: value}), [], "n")


def test_sysctls_need_their_namespace() -> None:
    with pytest.raises(InvalidArgument, match="host network"):
        validate.plan(_request(network=api_pb2.NODE, sysctls={"net.core.somaxconn": "1"}), [],
                      "n")
    with pytest.raises(InvalidArgument, match="IPC"):
        validate.plan(_request(ipc=api_pb2.NODE, sysctls={"kernel.shmmax": "1"}), [], "n")


def test_resolv_conf_from_dns_config() -> None:
    dns = api_pb2.DNSConfig(servers=["1.1.1.1"], searches=["a.local", "b"], options=["ndots:2"])
    assert podfiles.resolv_conf(dns) == "search a.local b\nnameserver 1.1.1.1\noptions ndots:2\n"


def test_hosts_file() -> None:
    text = podfiles.hosts_file("web-0", ["10.0.0.5"])
    assert "127.0.0.1\tlocalhost\n" in text and text.endswith("10.0.0.5\tweb-0\n")


def test_pod_cgroup_naming() -> None:
    cg = pod_cgroup.plan("cgroupfs", "", "/kubepods", "ab12")
    assert (cg.path, cg.owned, cg.prune_to) == ("/kubepods/podab12", True, "/kubepods")
    cg = pod_cgroup.plan("cgroupfs", "/kubepods/burstable/podx", "/kubepods", "u1")
    assert (cg.path, cg.owned) == ("/kubepods/burstable/podx", False)
    cg = pod_cgroup.plan("systemd", "", "/kubepods", "ab12")
    assert cg.path == "/kubepods.slice/kubepods-podab12.slice" and cg.owned
    cg = pod_cgroup.plan("systemd", "", "/pycri-test-1", "ab12")
    assert cg.path == "/pycri_test_1.slice/pycri_test_1-podab12.slice"
    cg = pod_cgroup.plan("systemd", "kubepods-besteffort-podx.slice", "/kubepods", "u")
    assert cg.path == "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podx.slice"
    with pytest.raises(InvalidArgument):
        pod_cgroup.plan("systemd", "not-a-slice", "/kubepods", "u")


@pytest.mark.parametrize("field_name", ["resources", "overhead"])
@pytest.mark.parametrize("resource", ["cpu_shares", "memory_limit_in_bytes", "cpu_period"])
def test_negative_pod_resources_are_refused(field_name: str, resource: str) -> None:
    req = _request()
    setattr(getattr(req.config.linux, field_name), resource, -5)
    with pytest.raises(InvalidArgument, match=f"linux.{field_name}: resources.{resource} must "
                                              "not be negative"):
        validate.plan(req, ["pycri"], "node1")


def test_pod_overhead_is_accepted() -> None:
    req = _request()
    req.config.linux.overhead.memory_limit_in_bytes = 64 << 20
    req.config.linux.resources.memory_limit_in_bytes = 128 << 20
    validate.plan(req, ["pycri"], "node1")
    assert pod_cgroup.pod_resources(req.config.linux)["memory_limit_in_bytes"] == 192 << 20
