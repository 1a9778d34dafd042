"""Contracts 2 and 4 (docs/architecture.md): PodSpec and ContainerSpec parse what older daemons
sent and stored, serialise to the same JSON, are frozen, and name the field they refuse."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from pycri_common.errors import InvalidArgument
from runtime.container_spec import ContainerSpec, Mount
from runtime.pod_spec import PodSpec

#: a ContainerSpec as the daemon before the dataclasses sent it (and stored it in its records:
#: validate_spec's output for a spec_builder spec), every optional part present
OLD_SPEC: dict[str, Any] = {
    "id": "c1", "pod_id": "p1",
    "rootfs": {"lower": ["/s/2/fs", "/s/1/fs"], "upper": "/c/c1/upper", "work": "/c/c1/work",
               "mountpoint": "/c/c1/rootfs", "readonly": True},
    "process": {
        "args": ["sh", "-c", "true"], "env": ["PATH=/bin", "A=b"], "cwd": "/w", "tty": False,
        "stdin": True, "stdin_once": True,
        "user": {"uid": 1000, "gid": None, "username": None, "groupname": "staff",
                 "supplemental_groups": [5, 7], "policy": "Strict"},
        "capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"],
                         "effective": ["CAP_CHOWN", "CAP_KILL"],
                         "permitted": ["CAP_CHOWN", "CAP_KILL"], "inheritable": [],
                         "ambient": []},
        "no_new_privs": True, "oom_score_adj": 500,
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524288}],
        "apparmor_profile": "runtime/default"},
    "namespaces": [{"type": "network", "path": "/run/pycri/netns/p1"},
                   {"type": "ipc", "path": "/run/pycri/ns/p1/ipc"},
                   {"type": "pid", "path": None}, {"type": "mount", "path": None},
                   {"type": "cgroup", "path": None}],
    "hostname": "mypod",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"], "propagation": None, "readonly": False,
         "recursive_readonly": False, "sub_path": None},
        {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind"],
         "propagation": "rslave", "readonly": True, "recursive_readonly": False,
         "sub_path": None},
        {"destination": "/iv", "type": "overlay", "source": "overlay",
         "options": ["ro", "nodev", "lowerdir=/a:/b"], "propagation": None, "readonly": True,
         "recursive_readonly": False, "sub_path": "etc"}],
    "devices": [{"host_path": "/dev/fuse", "container_path": "/dev/fuse", "permissions": "rw"}],
    "masked_paths": ["/proc/kcore"], "readonly_paths": ["/proc/sys"], "privileged": False,
    "seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
    "cgroup": {"driver": "cgroupfs", "path": "/kubepods/p1/c1",
               "resources": {"cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512,
                             "memory_limit_in_bytes": 1 << 28, "memory_swap_limit_in_bytes": 0,
                             "oom_score_adj": 500, "cpuset_cpus": "0-1", "cpuset_mems": None,
                             "hugepage_limits": [{"page_size": "2MB", "limit": 4194304}],
                             "unified": {"memory.high": "200000000"}}},
    "log_path": "/var/log/pods/p1/c/0.log", "log_directory": "/var/log/pods/p1"}

OLD_POD_SPEC: dict[str, Any] = {
    "pod_id": "p1", "hostname": "web", "namespaces": {"network": "pod", "ipc": "pod",
                                                      "pid": "container"},
    "sysctls": {"net.ipv4.ip_forward": "1"}, "shim_dir": "/run/pycri/shims/p1",
    "ns_dir": "/run/pycri/ns/p1", "netns_path": "/run/pycri/netns/p1",
    "cgroup": {"driver": "systemd", "parent": "kubepods.slice", "path": "/kubepods.slice/p1"},
    "log_level": "info"}


def test_old_container_spec_json_is_sent_on_unchanged() -> None:
    spec = ContainerSpec.from_json(copy.deepcopy(OLD_SPEC))
    assert spec.to_json() == OLD_SPEC
    assert spec.cgroup is not None and spec.cgroup.resources.cpu_shares == 512
    assert spec.mounts[2].sub_path == "etc" and spec.process.user.groupname == "staff"


def test_stored_record_spec_with_summarised_seccomp_still_parses() -> None:
    """What ContainerManager keeps in its records (the rules summarised) is a valid spec."""
    stored = {**OLD_SPEC, "seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscall_rules": 312}}
    assert ContainerSpec.from_json(stored).to_json()["seccomp"] == stored["seccomp"]


def test_the_parse_does_not_touch_its_input() -> None:
    raw = {"id": "c", "rootfs": {"lower": ["/l"], "upper": "/c/u", "work": "/c/w"},
           "process": {"args": ["sh"]}}
    before = copy.deepcopy(raw)
    ContainerSpec.from_json(raw)
    assert raw == before


def test_specs_are_frozen() -> None:
    spec = ContainerSpec.from_json(OLD_SPEC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mounts[0].readonly = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        PodSpec.from_json(OLD_POD_SPEC).pod_id = "x"  # type: ignore[misc]


def test_mount_round_trip() -> None:
    m = Mount("/x", "bind", "/src", ("rbind",), propagation="rshared")
    assert Mount.from_json(m.to_json(), "mounts[0]") == m


def test_old_pod_spec_json_is_sent_on_unchanged() -> None:
    pod = PodSpec.from_json(copy.deepcopy(OLD_POD_SPEC))
    assert pod.to_json() == OLD_POD_SPEC
    assert pod.namespaces.pause_types() == ["net", "ipc", "uts"]
    assert pod.cgroup is not None and pod.cgroup.driver == "systemd"
    assert pod.socket_path == "/run/pycri/shims/p1/shim.sock"


def test_pod_spec_defaults() -> None:
    pod = PodSpec.from_json({"pod_id": "p", "shim_dir": "/s", "ns_dir": "/n", "cgroup": None,
                             "netns_path": None})
    assert (pod.hostname, pod.netns_path, pod.cgroup, pod.sysctls) == ("", "", None, {})
    assert pod.namespaces.to_json() == {"network": "pod", "ipc": "pod", "pid": "container"}


@pytest.mark.parametrize(("change", "field"), [
    ({"pod_id": ""}, "pod_id"),
    ({"pod_id": "a/b"}, "pod_id"),
    ({"shim_dir": None}, "shim_dir"),
    ({"ns_dir": "relative"}, "ns_dir"),
    ({"shim_dir": "/" + "s" * 120}, "shim_dir"),
    ({"sysctls": ["x"]}, "sysctls"),
    ({"sysctls": {"net.ipv4.ip_forward": 1}}, "sysctls['net.ipv4.ip_forward']"),
    ({"namespaces": {"pid": "target"}}, "namespaces.pid"),
    ({"namespaces": {"network": "container"}}, "namespaces.network"),
    ({"cgroup": {"driver": "nope"}}, "cgroup.driver"),
    ({"hostname": 5}, "hostname"),
])
def test_pod_spec_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        PodSpec.from_json({**OLD_POD_SPEC, **change})
    assert f"pod spec: {field}:" in str(exc.value)


def test_pod_spec_must_be_an_object() -> None:
    with pytest.raises(InvalidArgument, match="pod spec: spec: must be a JSON object"):
        PodSpec.from_json(["p"])
