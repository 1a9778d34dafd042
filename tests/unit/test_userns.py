"""User namespace helpers: ID maps, mount data for a pod user namespace, cgroup v2 delegation."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pycri_common.errors import InvalidArgument
from runtime import container_init, container_spec, rootfs, userns
from runtime.cgroups import delegation
from runtime.cgroups import mode as cgmode
from runtime.container_spec import ContainerSpec
from runtime.pod_spec import PodSpec

IDMAP = userns.Idmap(fd=-1, uid_map=[[0, 131072, 65536]], gid_map=[[0, 196608, 65536]])


def test_map_text_and_translation() -> None:
    assert userns.map_text([[0, 1000, 100000]]) == "0 1000 100000\n"
    assert userns.to_host([[0, 1000, 10]], 9) == 1009
    assert userns.to_host([[0, 1000, 10]], 10) is None
    assert (IDMAP.root_uid, IDMAP.root_gid) == (131072, 196608)
    assert IDMAP.host_gid(5) == 196613


@pytest.mark.parametrize("mtype,data,expected", [
    ("tmpfs", "mode=755,size=65536k", "mode=755,size=65536k,uid=131072,gid=196608"),
    ("tmpfs", "uid=1000,mode=1777", "uid=132072,mode=1777,gid=196608"),
    ("devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5",
     "newinstance,ptmxmode=0666,mode=0620,gid=196613"),
    ("mqueue", "", ""),
    ("proc", "", ""),
])
def test_userns_mount_data(mtype: str, data: str, expected: str) -> None:
    assert rootfs.userns_data(mtype, data, IDMAP) == expected
    assert rootfs.userns_data(mtype, data, None) == data


def test_cgroup_v2_directory_is_delegated_to_the_mapped_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root (chown)")
    cg = tmp_path / "kubepods" / "pod" / "ctr"
    cg.mkdir(parents=True)
    for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "memory.max",
                 "memory.reclaim"):
        (cg / name).write_text("")
    listing = tmp_path / "delegate"
    # the kernel's list; memory.oom.group is listed but this cgroup lacks it
    listing.write_text("cgroup.procs\ncgroup.threads\ncgroup.subtree_control\n"
                       "memory.oom.group\nmemory.reclaim\n")
    monkeypatch.setattr(cgmode, "CGROUP_ROOT", str(tmp_path))
    monkeypatch.setattr(delegation, "DELEGATE_LIST", str(listing))
    container_init._delegate_cgroup("/kubepods/pod/ctr", IDMAP)
    owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in [cg, *cg.iterdir()]}
    mapped = (131072, 196608)
    assert owners == {"ctr": mapped, "cgroup.procs": mapped, "cgroup.threads": mapped,
                      "cgroup.subtree_control": mapped, "memory.reclaim": mapped,
                      "memory.max": (0, 0)}  # limits stay the host's
    assert not (cg / "memory.oom.group").exists()
    assert (cg.parent.stat().st_uid, cg.parent.stat().st_gid) == (0, 0)


def test_delegatable_files_fall_back_to_the_three_core_files(tmp_path: Path) -> None:
    fallback = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
    assert delegation.read_delegatable_files(str(tmp_path / "absent")) == fallback
    assert delegation.delegatable_files("") == fallback
    assert delegation.delegatable_files("cgroup.procs\n../x\nmemory.reclaim\n") == (
        "cgroup.procs", "memory.reclaim")


def _delegation_spec(**kw: Any) -> ContainerSpec:
    data: dict[str, Any] = {
        "id": "c", "rootfs": {"lower": ["/l"], "upper": "/c/u", "work": "/c/w"},
        "process": {"args": ["sh"]},
        "namespaces": [{"type": "mount"}, {"type": "cgroup"}],
        "mounts": [m.to_json() for m in container_spec.default_mounts(delegated_cgroup=True)],
        "userns": {"path": "/run/pycri/ns/p/user", **MAPS},
        "cgroup": {"driver": "cgroupfs", "path": "/kubepods/pod/c"}}
    data.update(kw)
    return ContainerSpec.from_json(data)


@pytest.mark.parametrize("case,mode,expected", [
    ("delegated", "v2", True),
    ("cgroup v1", "hybrid", False),
    ("no user namespace", "v2", False),
    ("read-only cgroupfs", "v2", False),
    ("host cgroup namespace", "v2", False),
    ("no cgroup", "v2", False),
])
def test_cgroup_delegation_needs_every_oci_condition(
        case: str, mode: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgmode, "detect_mode", lambda: mode)
    kw: dict[str, Any] = {}
    if case == "no user namespace":
        kw["userns"] = None
    elif case == "read-only cgroupfs":
        kw["mounts"] = [m.to_json() for m in container_spec.default_mounts()]
    elif case == "host cgroup namespace":
        kw["namespaces"] = [{"type": "mount"}]
    elif case == "no cgroup":
        kw["cgroup"] = None
    assert container_init.cgroup_delegation(_delegation_spec(**kw)) is expected


def test_default_mounts_cgroupfs_is_writable_only_when_delegated() -> None:
    def cgroup_mount(**kw: bool) -> container_spec.Mount:
        return next(m for m in container_spec.default_mounts(**kw)
                    if m.destination == "/sys/fs/cgroup")
    assert cgroup_mount().readonly and "ro" in cgroup_mount().options
    delegated = cgroup_mount(delegated_cgroup=True)
    assert not delegated.readonly and "ro" not in delegated.options
    sysfs = next(m for m in container_spec.default_mounts(delegated_cgroup=True)
                 if m.destination == "/sys")
    assert sysfs.readonly  # only the cgroupfs


# -- the contracts' userns fields (docs/architecture.md, contracts 2 and 4) --------------------

POD = {"pod_id": "p1", "shim_dir": "/run/pycri/shims/p1", "ns_dir": "/run/pycri/ns/p1",
       "netns_path": "/run/pycri/netns/p1"}
CTR = {"id": "c", "rootfs": {"lower": ["/l"], "upper": "/c/u", "work": "/c/w"},
       "process": {"args": ["sh"]}}
MAPS = {"uid_map": [[0, 131072, 65536]], "gid_map": [[0, 196608, 65536]]}


def test_pod_and_container_spec_userns_round_trip() -> None:
    pod = PodSpec.from_json({**POD, "userns": MAPS})
    assert pod.userns is not None and pod.userns.uid_map == ((0, 131072, 65536),)
    assert PodSpec.from_json(pod.to_json()) == pod
    assert "userns" not in PodSpec.from_json(POD).to_json()
    ctr = ContainerSpec.from_json({**CTR, "userns": {"path": "/run/pycri/ns/p1/user", **MAPS}})
    assert ctr.userns is not None and ctr.userns.maps.gid_map == ((0, 196608, 65536),)
    assert ctr.to_json()["userns"] == {"path": "/run/pycri/ns/p1/user", **MAPS}
    assert ContainerSpec.from_json(ctr.to_json()) == ctr
    assert "userns" not in ContainerSpec.from_json(CTR).to_json()


@pytest.mark.parametrize("maps,match", [
    ({"uid_map": [], "gid_map": [[0, 1, 1]]}, "userns.uid_map"),
    ({"uid_map": [[0, 1, 0]], "gid_map": [[0, 1, 1]]}, "userns.uid_map"),
    ({"uid_map": [[1, 1, 5]], "gid_map": [[0, 1, 1]]}, "container ID 0"),
    ({"uid_map": [[0, 1, 1]], "gid_map": [[0, -1, 1]]}, "userns.gid_map"),
    ({"uid_map": [[0, 1, 1]]}, "userns.gid_map"),
])
def test_bad_userns_maps_are_refused_naming_the_field(maps: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=f"pod spec: .*{match}"):
        PodSpec.from_json({**POD, "userns": maps})
    with pytest.raises(InvalidArgument, match=f"container spec: .*{match}"):
        ContainerSpec.from_json({**CTR, "userns": {"path": "/u", **maps}})


def test_privileged_container_spec_with_userns_refused() -> None:
    with pytest.raises(InvalidArgument, match="privileged"):
        ContainerSpec.from_json({**CTR, "privileged": True,
                                 "userns": {"path": "/u", **MAPS}})


# -- the idmapped filesystem sequence (recorded: nothing is mounted) ---------------------------

def test_prepare_with_a_pod_user_namespace_idmaps_layers_and_binds(tmp_path: Path) -> None:
    from runtime import syscalls as sc
    from tests.support.fake_syscalls import RecordingSyscalls
    from tests.unit.test_rootfs_sequence import Box
    if os.geteuid() != 0:
        pytest.fail("needs root (the writable layer is chowned)")
    box = Box(tmp_path)
    vol = tmp_path / "vol"
    vol.mkdir()
    spec = box.spec(mounts=[
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "mode=755"]},
        {"destination": "/data", "type": "bind", "source": str(vol), "options": ["rbind"]}])
    calls = RecordingSyscalls()
    idmap = userns.Idmap(fd=-1, uid_map=[[0, 131072, 65536]], gid_map=[[0, 196608, 65536]])
    root, _cwd, _rules = rootfs.prepare(spec, None, calls, idmap)
    staging = root + ".idmap"
    seq = [c for c in calls.calls if c[0] in ("mount", "umount2", "bind_idmapped", "chdir",
                                                "setfsuid", "setfsgid", "raise_effective_caps")]
    rootfs_part = seq[seq.index(("mount", "tmpfs", staging, "tmpfs",
                                 sc.MS_NOSUID | sc.MS_NODEV, "size=16k,mode=0700")):]
    assert rootfs_part[1:4] == [
        ("bind_idmapped", str(tmp_path / "lower"), staging + "/0", False),
        ("chdir", staging),
        ("mount", "overlay", root, "overlay", 0,
         f"lowerdir=0,upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}")]
    assert rootfs_part[4] == ("umount2", staging, sc.MNT_DETACH)
    assert rootfs_part[5:8] == [("setfsgid", 196608), ("setfsuid", 131072),
                                ("raise_effective_caps",)]
    assert ("mount", "tmpfs", root + "/dev", "tmpfs", sc.MS_NOSUID,
            "mode=755,uid=131072,gid=196608") in rootfs_part
    assert ("bind_idmapped", str(vol), root + "/data", True) in rootfs_part
    assert rootfs_part[-2:] == [("setfsuid", 0), ("setfsgid", 0)]
    upper = (tmp_path / "upper").stat()
    assert (upper.st_uid, upper.st_gid) == (131072, 196608)
    assert (tmp_path / "lower").stat().st_uid == 0  # the shared layer is never chowned


def test_idmapped_image_volume_with_sub_path_is_staged_in_the_container_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An overlay image volume with a sub_path in a pod user namespace: its idmapped layers
    are staged beside the rootfs, never in "/" (read-only on the VM leg's guest; found there:
    EROFS at CreateContainer)."""
    import contextlib
    from collections.abc import Iterator

    from runtime.container_spec import Mount
    from tests.support.fake_syscalls import RecordingSyscalls
    staged: list[str] = []

    @contextlib.contextmanager
    def layers(calls: object, lower: list[str], staging: str, idmap: object,
               field: str) -> Iterator[list[str]]:
        staged.append(staging)
        yield lower

    monkeypatch.setattr(rootfs, "_idmapped_layers", layers)
    root = tmp_path / "rootfs"
    root.mkdir()
    m = Mount(destination="/ivs", type="overlay", source="overlay",
              options=("ro", "lowerdir=/l2:/l1"), readonly=True, sub_path="etc")
    with pytest.raises(InvalidArgument, match="sub_path"):  # nothing is really mounted
        rootfs._sub_path_mount(RecordingSyscalls(), str(root), m, 0, 0, "ro,lowerdir=/l2:/l1",
                               "mounts[11]", IDMAP)
    assert staged == [str(tmp_path / ".idmap-mounts-11")]
