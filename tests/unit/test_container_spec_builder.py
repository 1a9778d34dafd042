"""ContainerSpec building from a CreateContainerRequest (cri_server.containers.spec_builder)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cri_server.containers import mounts, spec_builder
from cri_server.containers.image_config import ImageView
from cri_server.containers.pod_view import PodView
from proto import api_pb2
from pycri_common.errors import FailedPrecondition, InvalidArgument, NotFound
from runtime import container_spec
from runtime.capability_names import CAPABILITY_NAMES


def _pod(tmp: Path, **kw: Any) -> PodView:
    files = {}
    for name, dest in (("hostname", "/etc/hostname"), ("hosts", "/etc/hosts"),
                       ("resolv.conf", "/etc/resolv.conf")):
        (tmp / name).write_text("x\n")
        files[dest] = str(tmp / name)
    cfg = kw.pop("config", api_pb2.PodSandboxConfig(log_directory=str(tmp / "logs")))
    return PodView(id="p" * 64, state="ready", config=cfg,
                   namespaces=kw.pop("namespaces", {"network": "pod", "ipc": "pod",
                                                    "pid": "container"}),
                   ns_paths={"net": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts",
                             **kw.pop("ns_paths", {})},
                   hostname="mypod", cgroup_driver="cgroupfs", cgroup_path="/kubepods/podx",
                   pod_files=files, shim_dir="/run/shim", netns_path="/run/ns/net", **kw)


def _image(**kw: Any) -> ImageView:
    base: dict[str, Any] = {
        "id": "sha256:" + "i" * 64, "repo_digest": "reg/busybox@sha256:" + "d" * 64,
        "lower_dirs": ["/snap/2/fs", "/snap/1/fs"], "env": ["PATH=/bin", "IMG=1"],
        "entrypoint": None, "cmd": ["sh"], "working_dir": "", "user": "", "volumes": []}
    base.update(kw)
    return ImageView(**base)  # type: ignore[arg-type]


def _req(**config: Any) -> api_pb2.CreateContainerRequest:
    cfg = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name="c"),
                                  image=api_pb2.ImageSpec(image="busybox"), **config)
    return api_pb2.CreateContainerRequest(pod_sandbox_id="p" * 64, config=cfg)


def _build(tmp: Path, req: api_pb2.CreateContainerRequest, pod: PodView | None = None,
           image: ImageView | None = None, **kw: Any) -> dict[str, Any]:
    """The spec as sent to the shim (its JSON form)."""
    dirs = spec_builder.container_dirs(str(tmp / "ctr"))
    return spec_builder.build("c" * 64, req, pod or _pod(tmp), image or _image(), dirs,
                              host_devices=list, **kw).to_json()


def _sc(**kw: Any) -> api_pb2.LinuxContainerConfig:
    return api_pb2.LinuxContainerConfig(security_context=api_pb2.LinuxContainerSecurityContext(**kw))


def test_defaults(tmp_path: Path) -> None:
    spec = _build(tmp_path, _req(envs=[api_pb2.KeyValue(key="IMG", value=b"2")],
                                 log_path="c/0.log"))
    p = spec["process"]
    assert p["args"] == ["sh"]
    assert p["env"] == ["PATH=/bin", "HOSTNAME=mypod", "IMG=2"]
    assert p["cwd"] == "/"
    assert p["capabilities"]["effective"] == sorted(
        container_spec.DEFAULT_CAPABILITIES, key=CAPABILITY_NAMES.index)
    assert p["user"]["uid"] is None and p["user"]["username"] is None
    assert spec["rootfs"]["lower"] == ["/snap/2/fs", "/snap/1/fs"]
    assert spec["rootfs"]["upper"] == str(tmp_path / "ctr" / "upper")
    ns = {n["type"]: n["path"] for n in spec["namespaces"]}
    assert ns["network"] == "/run/ns/net" and ns["ipc"] == "/run/ns/ipc"
    assert ns["uts"] == "/run/ns/uts" and ns["pid"] is None and ns["mount"] is None
    assert spec["hostname"] == "mypod"
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests[:3] == ["/proc", "/dev", "/dev/pts"]
    assert {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"} <= set(dests)
    assert spec["masked_paths"] == [] and spec["readonly_paths"] == []
    assert spec["seccomp"] is None
    assert spec["cgroup"]["path"] == "/kubepods/podx/" + "c" * 64
    assert spec["log_path"] == str(tmp_path / "logs" / "c" / "0.log")


def test_workdir_user_and_command_from_image(tmp_path: Path) -> None:
    spec = _build(tmp_path, _req(args=["-c", "true"]),
                  image=_image(entrypoint=["/bin/sh"], working_dir="/app", user="www-data:33"))
    p = spec["process"]
    assert p["args"] == ["/bin/sh", "-c", "true"]
    assert p["cwd"] == "/app"
    assert p["user"]["username"] == "www-data" and p["user"]["gid"] == 33


def test_run_as_user_rules(tmp_path: Path) -> None:
    req = _req(linux=_sc(run_as_user=api_pb2.Int64Value(value=1000),
                         run_as_group=api_pb2.Int64Value(value=3000),
                         supplemental_groups=[4000], supplemental_groups_policy=api_pb2.Strict))
    u = _build(tmp_path, req, image=_image(user="nobody"))["process"]["user"]
    assert (u["uid"], u["gid"], u["username"]) == (1000, 3000, None)
    assert u["supplemental_groups"] == [4000] and u["policy"] == "Strict"
    u = _build(tmp_path, _req(linux=_sc(run_as_username="www-data",
                                        run_as_user=api_pb2.Int64Value(value=5))))["process"]["user"]
    assert u["username"] == "www-data" and u["uid"] is None
    with pytest.raises(InvalidArgument, match="run_as_group"):
        _build(tmp_path, _req(linux=_sc(run_as_group=api_pb2.Int64Value(value=1))),
               image=_image(user="1000"))


def test_capabilities_add_drop_all(tmp_path: Path) -> None:
    caps = api_pb2.Capability(add_capabilities=["ALL"], drop_capabilities=["CHOWN"])
    eff = _build(tmp_path, _req(linux=_sc(capabilities=caps)))["process"]["capabilities"]
    assert "CAP_SYS_ADMIN" in eff["effective"] and "CAP_CHOWN" not in eff["effective"]
    caps = api_pb2.Capability(drop_capabilities=["ALL"], add_capabilities=["NET_ADMIN"],
                              add_ambient_capabilities=["CAP_NET_BIND_SERVICE"])
    c = _build(tmp_path, _req(linux=_sc(capabilities=caps)))["process"]["capabilities"]
    assert c["effective"] == ["CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN"]
    assert c["ambient"] == ["CAP_NET_BIND_SERVICE"]


def test_privileged_needs_privileged_pod(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="privileged pod"):
        _build(tmp_path, _req(linux=_sc(privileged=True)))
    pod_cfg = api_pb2.PodSandboxConfig(linux=api_pb2.LinuxPodSandboxConfig(
        security_context=api_pb2.LinuxSandboxSecurityContext(privileged=True)))
    spec = _build(tmp_path, _req(linux=_sc(privileged=True, masked_paths=["/proc/kcore"],
                                           seccomp=api_pb2.SecurityProfile())),
                  pod=_pod(tmp_path, config=pod_cfg))
    assert spec["privileged"] and spec["seccomp"] is None and spec["masked_paths"] == []
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["effective"]
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert not sysfs["readonly"]


def test_masked_readonly_paths_as_sent(tmp_path: Path) -> None:
    spec = _build(tmp_path, _req(linux=_sc(masked_paths=["/proc/kcore", "/secret"],
                                           readonly_paths=["/proc/sys"])))
    assert spec["masked_paths"] == ["/proc/kcore", "/secret"]
    assert spec["readonly_paths"] == ["/proc/sys"]
    with pytest.raises(InvalidArgument):
        _build(tmp_path, _req(linux=_sc(masked_paths=["relative"])))


def test_seccomp_profiles(tmp_path: Path) -> None:
    rd = _build(tmp_path, _req(linux=_sc(seccomp=api_pb2.SecurityProfile(
        profile_type=api_pb2.SecurityProfile.RuntimeDefault))))["seccomp"]
    assert rd["defaultAction"] == "SCMP_ACT_ERRNO" and rd["syscalls"]
    legacy = _build(tmp_path, _req(linux=_sc(seccomp_profile_path="runtime/default")))
    assert legacy["seccomp"]["syscalls"]
    assert _build(tmp_path, _req(linux=_sc(seccomp=api_pb2.SecurityProfile(
        profile_type=api_pb2.SecurityProfile.Unconfined))))["seccomp"] is None
    prof = tmp_path / "p.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []}')
    local = _build(tmp_path, _req(linux=_sc(seccomp=api_pb2.SecurityProfile(
        profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=str(prof)))))
    assert local["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    with pytest.raises(InvalidArgument, match=r"missing\.json"):
        _build(tmp_path, _req(linux=_sc(seccomp=api_pb2.SecurityProfile(
            profile_type=api_pb2.SecurityProfile.Localhost,
            localhost_ref=str(tmp_path / "missing.json")))))


def test_pid_namespace_modes(tmp_path: Path) -> None:
    def pid_ns(mode: api_pb2.NamespaceMode, pod: PodView | None = None, **kw: Any) -> Any:
        sc = _sc(namespace_options=api_pb2.NamespaceOption(pid=mode, target_id="t"))
        spec = _build(tmp_path, _req(linux=sc), pod=pod, **kw)
        return {n["type"]: n["path"] for n in spec["namespaces"]}.get("pid", "host")

    pod_pid = _pod(tmp_path, ns_paths={"pid": "/run/ns/pid"})
    assert pid_ns(api_pb2.POD, pod_pid) == "/run/ns/pid"
    assert pid_ns(api_pb2.POD) is None           # pod without a shared pid namespace
    assert pid_ns(api_pb2.CONTAINER, pod_pid) is None
    assert pid_ns(api_pb2.NODE, pod_pid) == "host"
    assert pid_ns(api_pb2.TARGET, target_pid_ns=lambda t: f"/proc/{t}/ns/pid") == "/proc/t/ns/pid"


def test_host_network_pod(tmp_path: Path) -> None:
    pod = _pod(tmp_path, namespaces={"network": "node", "ipc": "node", "pid": "node"})
    spec = _build(tmp_path, _req(), pod=pod)
    types = {n["type"] for n in spec["namespaces"]}
    assert not types & {"network", "uts", "ipc"}
    assert spec["hostname"] is None


def test_cri_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "data"
    src.mkdir()
    link = tmp_path / "link"
    link.symlink_to(src)
    m = api_pb2.Mount(container_path="/data", host_path=str(link), readonly=True)
    spec = _build(tmp_path, _req(mounts=[m, api_pb2.Mount(container_path="/etc/hosts",
                                                          host_path=str(src))]))
    data = next(x for x in spec["mounts"] if x["destination"] == "/data")
    assert data["source"] == str(src) and data["readonly"] and data["type"] == "bind"
    hosts = [x for x in spec["mounts"] if x["destination"] == "/etc/hosts"]
    assert len(hosts) == 1 and hosts[0]["source"] == str(src)  # the request's wins
    with pytest.raises(NotFound, match="does not exist"):
        _build(tmp_path, _req(mounts=[api_pb2.Mount(container_path="/x",
                                                    host_path=str(tmp_path / "nope"))]))
    with pytest.raises(InvalidArgument, match="requires readonly"):
        _build(tmp_path, _req(mounts=[api_pb2.Mount(container_path="/x", host_path=str(src),
                                                    recursive_read_only=True)]))
    with pytest.raises(InvalidArgument, match="private"):
        _build(tmp_path, _req(mounts=[api_pb2.Mount(
            container_path="/x", host_path=str(src), readonly=True, recursive_read_only=True,
            propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER)]))
    monkeypatch.setattr(mounts, "_mountinfo", lambda: [("/", "master:1")])
    spec = _build(tmp_path, _req(mounts=[api_pb2.Mount(
        container_path="/x", host_path=str(src),
        propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER)]))
    assert spec["mounts"][-1]["propagation"] == "rslave"
    with pytest.raises(InvalidArgument, match="shared"):
        _build(tmp_path, _req(mounts=[api_pb2.Mount(
            container_path="/x", host_path=str(src),
            propagation=api_pb2.PROPAGATION_BIDIRECTIONAL)]))


def test_image_volumes_become_dirs(tmp_path: Path) -> None:
    spec = _build(tmp_path, _req(), image=_image(volumes=["/var/data"]))
    vol = next(x for x in spec["mounts"] if x["destination"] == "/var/data")
    assert Path(vol["source"]).is_dir() and not vol["readonly"]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="working directory"):
        _build(tmp_path, _req(working_dir="/proc/self/fd/7"))
    with pytest.raises(InvalidArgument, match="log_path"):
        _build(tmp_path, _req(log_path="../../etc/x"))
    with pytest.raises(FailedPrecondition):
        _build(tmp_path, _req(), image=_image(lower_dirs=[]))
    with pytest.raises(InvalidArgument, match="no command"):
        _build(tmp_path, _req(), image=_image(cmd=None))
    with pytest.raises(InvalidArgument):
        _build(tmp_path, _req(linux=_sc(capabilities=api_pb2.Capability(
            add_capabilities=["CAP_NOPE"]))))


def test_resources_and_devices(tmp_path: Path) -> None:
    res = api_pb2.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=64 << 20,
                                          cpu_quota=50000, cpu_period=100000,
                                          oom_score_adj=500)
    spec = _build(tmp_path, _req(linux=api_pb2.LinuxContainerConfig(resources=res),
                                 devices=[api_pb2.Device(host_path="/dev/null",
                                                         container_path="/dev/mynull",
                                                         permissions="rw")]))
    r = spec["cgroup"]["resources"]
    assert (r["cpu_shares"], r["memory_limit_in_bytes"], r["cpu_quota"]) == (512, 64 << 20, 50000)
    assert spec["process"]["oom_score_adj"] == 500
    assert spec["devices"] == [{"host_path": "/dev/null", "container_path": "/dev/mynull",
                                "permissions": "rw"}]


@pytest.mark.parametrize("userns,mode,writable", [
    (True, "v2", True), (True, "v1", False), (False, "v2", False)])
def test_cgroupfs_is_writable_for_a_pod_user_namespace_on_v2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, userns: bool, mode: str,
        writable: bool) -> None:
    from cri_server import host_features
    monkeypatch.setattr(host_features, "cgroup_mode", lambda: mode)
    maps = [[0, 131072, 65536]]
    pod = _pod(tmp_path, userns={"uids": maps, "gids": maps} if userns else {},
               ns_paths={"user": "/run/ns/user"})
    spec = _build(tmp_path, _req(), pod=pod)
    cg = next(m for m in spec["mounts"] if m["destination"] == "/sys/fs/cgroup")
    assert cg["readonly"] is not writable and ("ro" in cg["options"]) is not writable
    sysfs = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sysfs["readonly"] is True
