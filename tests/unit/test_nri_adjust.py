"""cri_server.nri.adjust: plugins' adjustments merged in order, conflicts, applied to a spec."""
from __future__ import annotations

from typing import Any

import pytest

from cri_server.nri import adjust
from cri_server.nri.adjust import Merged
from proto import nri_api_pb2 as nri
from pycri_common.errors import FailedPrecondition, InvalidArgument, Unimplemented
from runtime import container_spec


def _spec(cgroup: bool = True) -> dict[str, Any]:
    return container_spec.ContainerSpec.from_json({
        "id": "c1", "rootfs": {"lower": ["/l"], "upper": "/c/upper", "work": "/c/work"},
        "process": {"args": ["sleep", "1"], "env": ["PATH=/bin", "KEEP=1", "DROP=x"]},
        "mounts": [container_spec.bind_mount("/srv/a", "/a").to_json()],
        "cgroup": {"driver": "cgroupfs", "path": "/kubepods/pod/c1",
                   "resources": {"cpu_shares": 2, "memory_limit_in_bytes": 0}} if cgroup else None,
    }).to_json()


def _adj(**kw: Any) -> nri.ContainerAdjustment:
    return nri.ContainerAdjustment(**kw)


def test_env_args_annotations() -> None:
    m = Merged()
    m.add("10-a", _adj(env=[nri.KeyValue(key="NEW", value="v"), nri.KeyValue(key="KEEP",
                                                                             value="2"),
                            nri.KeyValue(key="-DROP")],
                       args=["echo", "hi"], annotations={"x": "1", "-gone": ""}))
    ann = {"gone": "y", "stay": "z"}
    spec = m.apply(_spec(), ann).to_json()
    assert spec["process"]["env"] == ["PATH=/bin", "KEEP=2", "NEW=v"]
    assert spec["process"]["args"] == ["echo", "hi"]
    assert ann == {"stay": "z", "x": "1"}


def test_mounts_added_replaced_and_removed() -> None:
    m = Merged()
    m.add("10-a", _adj(mounts=[
        nri.Mount(destination="/b", type="bind", source="/srv/b", options=["rbind", "ro",
                                                                            "rslave"]),
        nri.Mount(destination="-/a"),
        nri.Mount(destination="/t", type="tmpfs", source="tmpfs", options=["size=1m"])]))
    spec = m.apply(_spec(), {}).to_json()
    by_dest = {x["destination"]: x for x in spec["mounts"]}
    assert "/a" not in by_dest
    assert by_dest["/b"]["type"] == "bind" and by_dest["/b"]["readonly"]
    assert by_dest["/b"]["propagation"] == "rslave" and "rbind" in by_dest["/b"]["options"]
    assert by_dest["/t"]["options"] == ["size=1m"]


def test_a_bind_mount_without_rbind_gets_it_and_needs_an_absolute_source() -> None:
    m = Merged()
    m.add("10-a", _adj(mounts=[nri.Mount(destination="/b", type="bind", source="/srv/b")]))
    assert "rbind" in [x for x in m.apply(_spec(), {}).to_json()["mounts"] if x["destination"] == "/b"][0][
        "options"]
    m = Merged()
    m.add("10-a", _adj(mounts=[nri.Mount(destination="/b", type="bind", source="rel")]))
    with pytest.raises(InvalidArgument, match="not absolute"):
        m.apply(_spec(), {})


def test_resources_oom_rlimits_and_cgroup_path() -> None:
    a = _adj()
    a.linux.resources.memory.limit.value = 64 << 20
    a.linux.resources.cpu.quota.value = 50_000
    a.linux.resources.cpu.cpus = "0"
    a.linux.resources.unified["memory.high"] = "max"
    a.linux.oom_score_adj.value = 500
    a.linux.cgroups_path = "/elsewhere/c1"
    a.rlimits.add(type="RLIMIT_NOFILE", soft=100, hard=200)
    m = Merged()
    m.add("10-a", a)
    spec = m.apply(_spec(), {}).to_json()
    res = spec["cgroup"]["resources"]
    assert (res["memory_limit_in_bytes"], res["cpu_quota"], res["cpu_shares"],
            res["cpuset_cpus"], res["unified"]) == (64 << 20, 50_000, 2, "0",
                                                    {"memory.high": "max"})
    assert spec["cgroup"]["path"] == "/elsewhere/c1"
    assert spec["process"]["oom_score_adj"] == 500
    assert {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200} in spec["process"]["rlimits"]


@pytest.mark.parametrize(("first", "second", "what"), [
    (_adj(env=[nri.KeyValue(key="A", value="1")]), _adj(env=[nri.KeyValue(key="-A")]),
     "environment variable A"),
    (_adj(annotations={"k": "1"}), _adj(annotations={"k": "2"}), "annotation k"),
    (_adj(mounts=[nri.Mount(destination="/m", type="tmpfs", source="t")]),
     _adj(mounts=[nri.Mount(destination="-/m")]), "mount /m"),
    (_adj(args=["a"]), _adj(args=["b"]), "args"),
    (_adj(linux=nri.LinuxContainerAdjustment(resources=nri.LinuxResources(
        memory=nri.LinuxMemory(limit=nri.OptionalInt64(value=1 << 20))))),
     _adj(linux=nri.LinuxContainerAdjustment(resources=nri.LinuxResources(
         memory=nri.LinuxMemory(limit=nri.OptionalInt64(value=2 << 20))))),
     "resources memory_limit_in_bytes"),
])
def test_two_plugins_adjusting_one_thing_conflict(first: nri.ContainerAdjustment,
                                                  second: nri.ContainerAdjustment,
                                                  what: str) -> None:
    m = Merged()
    m.add("05-early", first)
    m.add("05-early", first)  # a plugin may repeat itself
    with pytest.raises(FailedPrecondition) as e:
        m.add("90-late", second)
    assert str(e.value) == f"NRI plugins 05-early and 90-late both adjust {what}"


def test_different_things_from_two_plugins_merge() -> None:
    m = Merged()
    m.add("05-a", _adj(env=[nri.KeyValue(key="A", value="1")]))
    m.add("06-b", _adj(env=[nri.KeyValue(key="B", value="2")]))
    assert m.apply(_spec(), {}).to_json()["process"]["env"][-2:] == ["A=1", "B=2"]


def _lin(**kw: Any) -> nri.ContainerAdjustment:
    return _adj(linux=nri.LinuxContainerAdjustment(**kw))


@pytest.mark.parametrize(("adj", "named"), [
    (_lin(sysctl={"net.x": "1"}), "linux.sysctl"),
    (_lin(scheduler=nri.LinuxScheduler()), "linux.scheduler"),
    (_lin(io_priority=nri.LinuxIOPriority()), "linux.io_priority"),
    (_lin(memory_policy=nri.LinuxMemoryPolicy()), "linux.memory_policy"),
    (_lin(net_devices={"eth1": nri.LinuxNetDevice(name="x")}), "linux.net_devices"),
    (_lin(resources=nri.LinuxResources(memory=nri.LinuxMemory(
        kernel=nri.OptionalInt64(value=1)))), "linux.resources.memory.kernel"),
])
def test_what_the_spec_cannot_express_is_unimplemented_naming_the_field(
        adj: nri.ContainerAdjustment, named: str) -> None:
    with pytest.raises(Unimplemented, match=named):
        Merged().add("10-a", adj)


@pytest.mark.parametrize("name", ["blockio_class", "rdt_class"])
def test_classes_pycri_has_no_config_for_fail_the_call(name: str) -> None:
    adj = _lin(resources=nri.LinuxResources(**{name: nri.OptionalString(value="gold")}))
    with pytest.raises(FailedPrecondition, match=f"linux.resources.{name} 'gold'"):
        Merged().add("10-a", adj)


def test_oci_hooks_are_appended_in_plugin_order_prestart_as_create_runtime() -> None:
    spec = _spec()
    spec["hooks"] = {"poststart": [{"path": "/bin/own", "args": ["own"], "env": [],
                                    "timeout": None}]}
    m = Merged()
    m.add("10-a", _adj(hooks=nri.Hooks(
        prestart=[nri.Hook(path="/bin/p", args=["p", "1"], env=["A=1"],
                           timeout=nri.OptionalInt(value=3))],
        poststart=[nri.Hook(path="/bin/a")])))
    m.add("20-b", _adj(hooks=nri.Hooks(poststart=[nri.Hook(path="/bin/b")],
                                       start_container=[nri.Hook(path="/bin/s")])))
    hooks = m.apply(spec, {}).to_json()["hooks"]
    assert hooks["createRuntime"] == [{"path": "/bin/p", "args": ["p", "1"], "env": ["A=1"],
                                       "timeout": 3}]
    assert [h["path"] for h in hooks["poststart"]] == ["/bin/own", "/bin/a", "/bin/b"]
    assert [h["path"] for h in hooks["startContainer"]] == ["/bin/s"]


def test_a_bad_hook_is_refused_by_the_spec() -> None:
    m = Merged()
    m.add("10-a", _adj(hooks=nri.Hooks(poststop=[nri.Hook(path="relative")])))
    with pytest.raises(InvalidArgument, match=r"hooks\.poststop"):
        m.apply(_spec(), {})


def test_devices_added_with_a_cgroup_rule_removed_and_rules_set_access() -> None:
    spec = _spec()
    spec["devices"] = [{"host_path": "/dev/old", "container_path": "/dev/old",
                        "permissions": "rwm"}]
    m = Merged()
    m.add("10-a", _lin(devices=[
        nri.LinuxDevice(path="/dev/nri0", type="c", major=250, minor=1,
                        file_mode=nri.OptionalFileMode(value=0o640),
                        uid=nri.OptionalUInt32(value=7)),
        nri.LinuxDevice(path="/dev/nri1", type="b", major=7, minor=3),
        nri.LinuxDevice(path="-/dev/old")],
        resources=nri.LinuxResources(devices=[nri.LinuxDeviceCgroup(
            allow=True, type="b", major=nri.OptionalInt64(value=7), access="r")])))
    devs = {d["container_path"]: d for d in m.apply(spec, {}).to_json()["devices"]}
    assert set(devs) == {"/dev/nri0", "/dev/nri1"}
    assert devs["/dev/nri0"] == {"host_path": "/dev/nri0", "container_path": "/dev/nri0",
                                 "permissions": "rwm", "type": "c", "major": 250, "minor": 1,
                                 "file_mode": 0o640, "uid": 7, "gid": 0}
    assert devs["/dev/nri1"]["permissions"] == "r"


def test_a_device_rule_for_no_added_device_is_refused() -> None:
    m = Merged()
    m.add("10-a", _lin(resources=nri.LinuxResources(devices=[nri.LinuxDeviceCgroup(
        allow=True, type="c", major=nri.OptionalInt64(value=1), access="rwm")])))
    with pytest.raises(Unimplemented, match="matches no device"):
        m.apply(_spec(), {})


def test_two_plugins_adding_one_device_conflict() -> None:
    m = Merged()
    m.add("10-a", _lin(devices=[nri.LinuxDevice(path="/dev/x", type="c", major=1, minor=1)]))
    with pytest.raises(FailedPrecondition, match="10-a and 20-b both adjust device /dev/x"):
        m.add("20-b", _lin(devices=[nri.LinuxDevice(path="/dev/x", type="c", major=1,
                                                    minor=2)]))


def test_cdi_devices_are_resolved_through_the_registry_and_injected(tmp_path: Any) -> None:
    from cri_server.cdi.registry import Registry
    (tmp_path / "vendor.yaml").write_text(
        'cdiVersion: "0.6.0"\nkind: vendor.com/dev\ndevices:\n- name: one\n'
        '  containerEdits:\n    env: ["FROM_CDI=1"]\n')
    reg = Registry([str(tmp_path)])
    m = Merged()
    m.add("10-a", _adj(CDI_devices=[nri.CDIDevice(name="vendor.com/dev=one")]))
    spec = m.apply(_spec(), {}, reg.resolve).to_json()
    assert "FROM_CDI=1" in spec["process"]["env"]
    assert spec["cdi_devices"] == ["vendor.com/dev=one"]
    with pytest.raises(FailedPrecondition, match="no CDI registry"):
        m.apply(_spec(), {})


def test_namespaces_replaced_and_removed() -> None:
    spec = _spec()
    spec["namespaces"] = [{"type": "network", "path": "/proc/1/ns/net"},
                          {"type": "ipc", "path": None}, {"type": "mount", "path": None}]
    m = Merged()
    m.add("10-a", _lin(namespaces=[nri.LinuxNamespace(type="network", path="/run/netns/x"),
                                   nri.LinuxNamespace(type="-ipc"),
                                   nri.LinuxNamespace(type="uts")]))
    got = {n["type"]: n["path"] for n in m.apply(spec, {}).to_json()["namespaces"]}
    assert got == {"network": "/run/netns/x", "mount": None, "uts": None}
    with pytest.raises(InvalidArgument, match="'user' namespace"):
        Merged().add("10-a", _lin(namespaces=[nri.LinuxNamespace(type="user")]))


def test_seccomp_policy_becomes_the_oci_profile() -> None:
    pol = nri.LinuxSeccomp(default_action="SCMP_ACT_ALLOW", architectures=["SCMP_ARCH_X86_64"],
                           syscalls=[nri.LinuxSyscall(
                               names=["mkdir"], action="SCMP_ACT_ERRNO",
                               errno_ret=nri.OptionalUInt32(value=1),
                               args=[nri.LinuxSeccompArg(index=1, value=2,
                                                         op="SCMP_CMP_EQ")])])
    m = Merged()
    m.add("10-a", _lin(seccomp_policy=pol))
    prof = m.apply(_spec(), {}).to_json()["seccomp"]
    assert prof["defaultAction"] == "SCMP_ACT_ALLOW"
    assert prof["syscalls"] == [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                                 "args": [{"index": 1, "value": 2, "valueTwo": 0,
                                           "op": "SCMP_CMP_EQ"}]}]


def test_rdt_needs_resctrl_and_is_set_where_present(tmp_path: Any) -> None:
    rdt = nri.LinuxRdt(clos_id=nri.OptionalString(value="gold"),
                       schemata=nri.OptionalRepeatedString(value=["L3:0=f"]))
    m = Merged()
    m.add("10-a", _lin(rdt=rdt))
    with pytest.raises(FailedPrecondition, match="resctrl"):
        m.apply(_spec(), {}, resctrl=str(tmp_path))
    (tmp_path / "info").mkdir()
    got = m.apply(_spec(), {}, resctrl=str(tmp_path)).to_json()["intel_rdt"]
    assert (got["clos_id"], got["schemata"], got["owned"]) == ("gold", ["L3:0=f"], False)


def test_memory_reservation_swappiness_and_realtime_reach_the_cgroup_resources() -> None:
    a = _adj()
    a.linux.resources.memory.reservation.value = 32 << 20
    a.linux.resources.memory.swappiness.value = 0
    a.linux.resources.cpu.realtime_period.value = 500000
    a.linux.resources.cpu.realtime_runtime.value = 0
    m = Merged()
    m.add("10-a", a)
    res = m.apply(_spec(), {}).to_json()["cgroup"]["resources"]
    assert (res["memory_reservation_in_bytes"], res["memory_swappiness"],
            res["cpu_realtime_period"], res["cpu_realtime_runtime"]) == (32 << 20, 0, 500000, 0)


def test_field_owners_name_who_adjusted_what() -> None:
    m = Merged()
    m.add("10-a", _adj(env=[nri.KeyValue(key="A", value="1")], args=["x"]))
    m.add("20-b", _adj(hooks=nri.Hooks(poststart=[nri.Hook(path="/bin/b")])))
    fo = adjust.field_owners(m.owners)
    assert fo.simple[nri.Args] == "10-a"
    assert dict(fo.compound[nri.Env].owners) == {"A": "10-a"}
    assert dict(fo.compound[nri.OciHooks].owners) == {"20-b": "20-b"}
    assert list(m.plugins) == ["10-a", "20-b"]
    assert list(m.adjustment().args) == ["x"] and len(m.adjustment().hooks.poststart) == 1


@pytest.mark.parametrize(("adj", "error"), [
    (_adj(env=[nri.KeyValue(key="A=B", value="1")]), InvalidArgument),
    (_adj(env=[nri.KeyValue(key="", value="1")]), InvalidArgument),
    (_adj(mounts=[nri.Mount(destination="rel", type="tmpfs")]), InvalidArgument),
    (_adj(linux=nri.LinuxContainerAdjustment(oom_score_adj=nri.OptionalInt(value=1001))),
     InvalidArgument),
])
def test_bad_adjustments_are_refused(adj: nri.ContainerAdjustment, error: type[Exception]) -> None:
    with pytest.raises(error):
        Merged().add("10-a", adj)


def test_resources_for_a_container_without_cgroup_fail() -> None:
    a = _adj()
    a.linux.resources.cpu.shares.value = 10
    m = Merged()
    m.add("10-a", a)
    with pytest.raises(FailedPrecondition, match="no cgroup"):
        m.apply(_spec(cgroup=False), {})


def test_resource_update_keeps_only_what_is_set() -> None:
    r = nri.LinuxResources()
    assert adjust.resource_update(r) == {}
    r.memory.swap.value = 5
    r.pids.limit = 7
    r.hugepage_limits.add(page_size="2MB", limit=4096)
    assert adjust.resource_update(r) == {"memory_swap_limit_in_bytes": 5, "pids_limit": 7,
                                         "hugepage_limits": [{"page_size": "2MB",
                                                              "limit": 4096}]}


def test_a_device_rule_alone_is_not_an_empty_adjustment() -> None:
    m = Merged()
    m.add("10-a", _lin(resources=nri.LinuxResources(devices=[nri.LinuxDeviceCgroup(
        allow=True, type="c", access="r")])))
    assert not m.empty
