"""ContainerSpec helpers: capability computation, defaults, parsing = validation (pure)."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from pycri_common.errors import InvalidArgument
from runtime import container_spec as cs
from runtime.capability_names import (
    capabilities_to_mask,
    mask_to_capabilities,
    normalize_capability,
)


def validate(spec: Any) -> dict[str, Any]:
    """The parse the shim runs, as the JSON it would send on."""
    return cs.ContainerSpec.from_json(spec).to_json()


def caps_json(**kw: Any) -> dict[str, list[str]]:
    return cs.compute_capabilities(**kw).to_json()


def minimal_spec() -> dict[str, Any]:
    return {"id": "c1", "rootfs": {"lower": ["/l"], "upper": "/c/upper", "work": "/c/work"},
            "process": {"args": ["sh"]}}


def test_default_capabilities_match_containerd() -> None:
    assert set(cs.default_capabilities()) == {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}


def test_compute_defaults() -> None:
    caps = caps_json()
    assert set(caps["bounding"]) == set(cs.DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert caps["inheritable"] == [] and caps["ambient"] == []


def test_add_and_drop_names_any_form() -> None:
    caps = caps_json(add=["sys_admin", "CAP_NET_ADMIN"], drop=["KILL", "chown"])
    assert "CAP_SYS_ADMIN" in caps["bounding"] and "CAP_NET_ADMIN" in caps["bounding"]
    assert "CAP_KILL" not in caps["bounding"] and "CAP_CHOWN" not in caps["bounding"]


def test_add_all_then_drop_one() -> None:
    caps = caps_json(add=["ALL"], drop=["CHOWN"])
    assert "CAP_CHOWN" not in caps["bounding"]
    assert set(caps["bounding"]) == set(cs.all_capabilities()) - {"CAP_CHOWN"}


def test_drop_all_then_add_one() -> None:
    assert caps_json(add=["CHOWN"], drop=["all"])["bounding"] == ["CAP_CHOWN"]


def test_ambient_goes_into_every_set() -> None:
    caps = caps_json(drop=["ALL"], add_ambient=["NET_BIND_SERVICE"])
    for key in cs.CAP_SET_NAMES:
        assert caps[key] == ["CAP_NET_BIND_SERVICE"]


def test_privileged_gets_all() -> None:
    caps = caps_json(drop=["ALL"], privileged=True)
    assert caps["bounding"] == cs.all_capabilities()


@pytest.mark.parametrize("bad", [["CAP_NOPE"], ["", "CHOWN"], [3]])
def test_unknown_capability_rejected(bad: list[Any]) -> None:
    with pytest.raises(InvalidArgument, match="add_capabilities"):
        caps_json(add=bad)


def test_ambient_all_rejected() -> None:
    with pytest.raises(InvalidArgument, match="ALL"):
        caps_json(add_ambient=["ALL"])


def test_capability_masks_roundtrip() -> None:
    assert normalize_capability("net_raw") == "CAP_NET_RAW"
    assert normalize_capability("bogus") is None
    names = ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_BPF"]
    assert mask_to_capabilities(capabilities_to_mask(names)) == names


def test_default_mounts_and_privileged() -> None:
    mounts = [m.to_json() for m in cs.default_mounts()]
    assert [m["destination"] for m in mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    sysfs = mounts[5]
    assert "ro" in sysfs["options"] and sysfs["readonly"]
    priv = [m.to_json() for m in cs.default_mounts(privileged=True)]
    assert "ro" not in priv[5]["options"] and not priv[6]["readonly"]
    assert "newinstance" in mounts[2]["options"]


def test_default_paths_and_rlimits() -> None:
    assert "/proc/kcore" in cs.default_masked_paths()
    assert "/sys/firmware" in cs.default_masked_paths()
    assert cs.default_readonly_paths() == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                           "/proc/sysrq-trigger"]
    lim = cs.default_rlimits()
    assert lim[0].type == "RLIMIT_NOFILE" and lim[0].soft <= lim[0].hard
    lim[0] = cs.Rlimit("RLIMIT_NOFILE", 1, 1)
    assert cs.default_rlimits()[0].soft == 1024  # a fresh list each time (entries are frozen)


def test_validate_fills_defaults() -> None:
    s = validate(minimal_spec())
    assert s["rootfs"]["mountpoint"] == "/c/rootfs"
    assert s["process"]["cwd"] == "/" and s["process"]["env"] == []
    assert s["process"]["user"]["policy"] == "Merge"
    assert set(s["process"]["capabilities"]["bounding"]) == set(cs.DEFAULT_CAPABILITIES)
    assert s["process"]["rlimits"] == [r.to_json() for r in cs.default_rlimits()]
    assert s["mounts"] == [] and s["masked_paths"] == [] and s["seccomp"] is None
    assert s["cgroup"] is None


def test_validate_does_not_modify_input() -> None:
    spec = minimal_spec()
    before = copy.deepcopy(spec)
    validate(spec)
    assert spec == before


@pytest.mark.parametrize(("path", "value", "field"), [
    (("id",), "a/b", "id"),
    (("rootfs", "lower"), [], "rootfs.lower"),
    (("rootfs", "lower"), ["relative"], "rootfs.lower[0]"),
    (("rootfs", "upper"), "/a,b", "rootfs.upper"),
    (("process", "args"), [], "process.args"),
    (("process", "env"), ["NOEQUALS"], "process.env[0]"),
    (("process", "cwd"), "rel/dir", "process.cwd"),
    (("process", "oom_score_adj"), 5000, "process.oom_score_adj"),
    (("process", "user"), {"uid": -1}, "process.user.uid"),
    (("process", "user"), {"uid": 1, "username": "x"}, "process.user"),
    (("process", "user"), {"policy": "Loose"}, "process.user.policy"),
    (("process", "capabilities"), {"bounding": ["ALL"]}, "process.capabilities.bounding"),
    (("process", "rlimits"), [{"type": "RLIMIT_NOFILE", "soft": 5, "hard": 1}],
     "process.rlimits[0]"),
    (("process", "rlimits"), [{"type": "NOFILE", "soft": 1, "hard": 1}],
     "process.rlimits[0].type"),
    (("namespaces",), [{"type": "user"}], "namespaces[0].type"),
    (("namespaces",), [{"type": "pid"}, {"type": "pid"}], "namespaces[1].type"),
    (("mounts",), [{"destination": "x", "type": "bind", "source": "/a"}],
     "mounts[0].destination"),
    (("mounts",), [{"destination": "/x", "type": "bind", "source": "/a",
                    "propagation": "shared"}], "mounts[0].propagation"),
    (("masked_paths",), ["relative"], "masked_paths[0]"),
    (("seccomp",), {"syscalls": []}, "seccomp"),
    (("cgroup",), {"driver": "x", "path": "/a"}, "cgroup.driver"),
    (("cgroup",), {"path": "/a/../b"}, "cgroup.path"),
    (("cgroup",), {"path": "/a", "resources": {"cpuset_cpus": "0;1"}},
     "cgroup.resources.cpuset_cpus"),
    (("cgroup",), {"path": "/a", "resources": {"unified": {"../x": "1"}}},
     "cgroup.resources.unified['../x']"),
    (("devices",), [{"host_path": "/dev/null", "permissions": "rwx"}],
     "devices[0].permissions"),
    (("log_path",), "relative.log", "log_path"),
    (("process", "args"), ["echo", "x" * 131072], "process.args and process.env"),
    (("process", "env"), ["K=" + "v" * 131070], "process.args and process.env"),
])
def test_validate_names_the_field(path: tuple[str, ...], value: Any, field: str) -> None:
    spec = minimal_spec()
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InvalidArgument) as exc:
        validate(spec)
    assert f"container spec: {field}:" in str(exc.value)


@pytest.mark.parametrize(("change", "msg"), [
    ({"readonly": False}, "requires readonly"),
    ({"propagation": "rslave"}, "requires private propagation"),
])
def test_recursive_readonly_rules(change: dict[str, Any], msg: str) -> None:
    m = cs.bind_mount("/src", "/dst", recursive_readonly=True).to_json()
    m.update(change)
    spec = minimal_spec()
    spec["mounts"] = [m]
    with pytest.raises(InvalidArgument, match=msg):
        validate(spec)


def test_recursive_readonly_only_for_bind() -> None:
    spec = minimal_spec()
    spec["mounts"] = [{"destination": "/t", "type": "tmpfs", "readonly": True,
                       "recursive_readonly": True}]
    with pytest.raises(InvalidArgument, match="only for bind"):
        validate(spec)


def test_systemd_cgroup_path_converted() -> None:
    spec = minimal_spec()
    spec["cgroup"] = {"driver": "systemd", "path": "kubepods-pod1.slice:pycri:c1"}
    assert validate(spec)["cgroup"]["path"] == \
        "/kubepods.slice/kubepods-pod1.slice/pycri-c1.scope"


@pytest.mark.parametrize("log_path", ["/logs/pod/c.log", "/logs/pod/a/b/c.log"])
def test_log_path_below_log_directory(log_path: str) -> None:
    s = validate({**minimal_spec(), "log_path": log_path, "log_directory": "/logs/pod/"})
    assert s["log_path"] == log_path and s["log_directory"] == "/logs/pod/"


@pytest.mark.parametrize("log_path", ["/logs/podx/c.log", "/logs/pod", "/logs/pod/a/../../c.log",
                                      "/logs/other/c.log"])
def test_log_path_outside_log_directory_refused(log_path: str) -> None:
    with pytest.raises(InvalidArgument, match="log_path: must be a normalized path below"):
        validate({**minimal_spec(), "log_path": log_path, "log_directory": "/logs/pod"})


def test_no_log_path() -> None:
    s = validate({**minimal_spec(), "log_path": "", "log_directory": ""})
    assert s["log_path"] is None and s["log_directory"] is None
