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


@pytest.mark.parametrize(("adj", "named"), [
    (_adj(CDI_devices=[nri.CDIDevice(name="vendor.com/gpu=0")]), "CDI devices"),
    (_adj(hooks=nri.Hooks(prestart=[nri.Hook(path="/bin/true")])), "OCI hooks"),
    (_adj(linux=nri.LinuxContainerAdjustment(devices=[nri.LinuxDevice(path="/dev/x")])),
     "linux.devices"),
    (_adj(linux=nri.LinuxContainerAdjustment(sysctl={"net.x": "1"})), "linux.sysctl"),
    (_adj(linux=nri.LinuxContainerAdjustment(scheduler=nri.LinuxScheduler())), "linux.scheduler"),
    (_adj(linux=nri.LinuxContainerAdjustment(resources=nri.LinuxResources(
        blockio_class=nri.OptionalString(value="x")))), "blockio_class"),
])
def test_what_pycri_cannot_do_is_unimplemented_not_dropped(adj: nri.ContainerAdjustment,
                                                           named: str) -> None:
    with pytest.raises(Unimplemented, match=named):
        Merged().add("10-a", adj)


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
