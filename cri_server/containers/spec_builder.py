"""CreateContainerRequest + the pod + the image -> ContainerSpec (contract 4, docs/architecture.md).

Pure except for reading the host (host paths, mountinfo, device nodes, seccomp
profile files) and creating the container's volume directories. Every check a
request can fail is made here, before the shim is asked for anything.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

from cri_server import host_features, resources
from cri_server.cdi import inject
from cri_server.cdi.registry import Resolved
from cri_server.containers import command, mounts, security
from cri_server.containers.image_config import ImageView
from cri_server.containers.pod_view import PodView
from proto import api_pb2
from pycri_common.errors import FailedPrecondition, InvalidArgument, Unimplemented
from runtime import container_spec
from runtime.container_spec import (
    CgroupSpec,
    ContainerSpec,
    Device,
    Namespace,
    ProcessSpec,
    Resources,
    RootfsSpec,
    UsernsSpec,
)
from runtime.pod_spec import IdMaps

# TARGET pid mode: container id -> path of that container's pid namespace
TargetPidNs = Callable[[str], str]


@dataclass
class ContainerDirs:
    upper: str
    work: str
    volumes: str
    rootfs: str


def _namespaces(pod: PodView, sc: api_pb2.LinuxContainerSecurityContext,
                target_pid_ns: TargetPidNs | None) -> list[Namespace]:
    ns: list[Namespace] = []
    if not pod.host_network:
        for kind, key in (("network", "net"), ("uts", "uts")):
            path = pod.ns_paths.get(key)
            if not path:
                raise FailedPrecondition(f"pod {pod.id} has no pinned {kind} namespace; is the "
                                         "pod still running?")
            ns.append(Namespace(kind, path))
    if pod.namespaces.get("ipc", "pod") != "node":
        path = pod.ns_paths.get("ipc")
        if not path:
            raise FailedPrecondition(f"pod {pod.id} has no pinned ipc namespace")
        ns.append(Namespace("ipc", path))
    opts = sc.namespace_options
    if opts.pid == api_pb2.NODE:
        pass
    elif opts.pid == api_pb2.TARGET:
        if not opts.target_id:
            raise InvalidArgument("namespace_options.pid is TARGET but target_id is empty")
        if target_pid_ns is None:
            raise FailedPrecondition("TARGET pid namespaces are not available")
        ns.append(Namespace("pid", target_pid_ns(opts.target_id)))
    elif opts.pid == api_pb2.POD and pod.ns_paths.get("pid"):
        ns.append(Namespace("pid", pod.ns_paths["pid"]))
    else:  # CONTAINER, or POD in a pod without a pod-wide pid namespace
        ns.append(Namespace("pid"))
    ns.append(Namespace("mount"))
    if host_features.cgroup_mode() == "v2":
        ns.append(Namespace("cgroup"))
    return ns


def _userns(pod: PodView, sc: api_pb2.LinuxContainerSecurityContext) -> UsernsSpec | None:
    """The container's user namespace: always its pod's (kubelet repeats the pod's
    userns_options in the container's; anything else is refused)."""
    opts = sc.namespace_options
    if opts.HasField("userns_options"):
        u = opts.userns_options
        if u.mode in (api_pb2.CONTAINER, api_pb2.TARGET):
            raise InvalidArgument(f"user namespace mode {api_pb2.NamespaceMode.Name(u.mode)} is "
                                  "not supported for a container (it shares its pod's)")
        asked = ({} if u.mode == api_pb2.NODE else
                 {"uids": [[m.container_id, m.host_id, m.length] for m in u.uids],
                  "gids": [[m.container_id, m.host_id, m.length] for m in u.gids]})
        have = {k: pod.userns[k] for k in ("uids", "gids")} if pod.userns else {}
        if asked != have:
            raise InvalidArgument("the container's userns_options differ from its pod's "
                                  "(a container shares the pod's user namespace)")
    if not pod.userns:
        return None
    path = pod.ns_paths.get("user")
    if not path:
        raise FailedPrecondition(f"pod {pod.id} has no pinned user namespace; is the pod still "
                                 "running?")
    if sc.privileged:
        raise InvalidArgument("a privileged container cannot run in a pod user namespace")
    return UsernsSpec(path=path, maps=IdMaps(
        uid_map=tuple((c, h, n) for c, h, n in pod.userns["uids"]),
        gid_map=tuple((c, h, n) for c, h, n in pod.userns["gids"])))


def _log_path(log_directory: str, log_path: str) -> str | None:
    if not log_directory or not log_path:
        return None
    if not log_directory.startswith("/"):
        raise InvalidArgument(f"log_directory {log_directory!r} must be absolute")
    full = posixpath.normpath(posixpath.join(log_directory, log_path))
    if not full.startswith(posixpath.normpath(log_directory) + "/"):
        raise InvalidArgument(f"log_path {log_path!r} leaves the pod's log directory")
    return full


def _working_dir(config: api_pb2.ContainerConfig, image: ImageView) -> str:
    cwd = config.working_dir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"working directory {cwd!r} must be an absolute path")
    norm = posixpath.normpath(cwd)
    if norm.startswith(("/proc/self/fd", "/proc/thread-self/fd")) or (
            norm.startswith("/proc/") and "/fd" in norm):
        raise InvalidArgument(f"working directory {cwd!r} points into /proc file descriptors")
    return cwd


def _text(value: bytes | str) -> str:
    """KeyValue.value is bytes in CRI v1.36 (string before); env values are text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    return value


def _cgroup(pod: PodView, container_id: str, res: Resources) -> CgroupSpec | None:
    if not pod.cgroup_path:
        return None
    if pod.cgroup_driver == "systemd":
        path = posixpath.join(pod.cgroup_path, f"pycri-{container_id}.scope")
    else:
        path = posixpath.join(pod.cgroup_path, container_id)
    return CgroupSpec(driver=pod.cgroup_driver, path=path, resources=res)


def build(container_id: str, request: api_pb2.CreateContainerRequest, pod: PodView,
          image: ImageView, dirs: ContainerDirs, target_pid_ns: TargetPidNs | None = None,
          host_devices: Callable[[], list[Device]] | None = None,
          image_layers: Callable[[str], list[str]] | None = None,
          cdi_devices: list[Resolved] | None = None) -> ContainerSpec:
    """The spec, checked by the same parse the shim runs (ContainerSpec.from_json), so a
    request the init would refuse fails here, before the shim is asked for anything.
    CDI devices' edits are applied to its JSON form (cri_server.cdi.inject) before that."""
    config = request.config
    sc = config.linux.security_context
    pod_sc = pod.config.linux.security_context
    if sc.privileged and not pod_sc.privileged:
        raise InvalidArgument("a privileged container is only allowed in a privileged pod "
                              "(PodSandboxConfig.linux.security_context.privileged)")
    if not image.lower_dirs:
        raise FailedPrecondition(f"image {image.id} has no unpacked layers")
    caps = security.capabilities(sc)
    seccomp_profile = security.seccomp_profile(sc, caps)
    masked, readonly_paths = security.masked_and_readonly_paths(sc)
    res_json = resources.to_dict(config.linux.resources)
    args = command.merge_command(list(config.command), list(config.args), image.entrypoint,
                                 image.cmd)
    hostname = pod.hostname
    env = command.merge_env(
        [command.DEFAULT_PATH], [f"HOSTNAME={hostname}"] if hostname else [], image.env,
        [f"{kv.key}={_text(kv.value)}" for kv in config.envs])
    requested = {posixpath.normpath(m.container_path) for m in config.mounts
                 if m.container_path.startswith("/")}
    userns = _userns(pod, sc)
    # cgroup v2 + a pod user namespace: the container's cgroup is delegated to its root
    # (runtime.container_init.cgroup_delegation), so its cgroupfs is read-write
    delegated = userns is not None and host_features.cgroup_mode() == "v2"
    spec_mounts = mounts.share_pod_shm(
        container_spec.default_mounts(privileged=sc.privileged, delegated_cgroup=delegated),
        pod.namespaces.get("ipc", "pod"), pod.shm_path)
    spec_mounts += mounts.pod_file_mounts(pod.pod_files, requested, readonly=sc.readonly_rootfs)
    spec_mounts += mounts.volume_mounts(image.volumes, requested, dirs.volumes)
    for m in config.mounts:
        if m.HasField("image") and m.image.image:
            if image_layers is None:
                raise Unimplemented(f"mount {m.container_path!r}: image volumes are not "
                                    "supported")
            spec_mounts.append(mounts.image_mount(m, image_layers))
            continue
        spec_mounts.append(mounts.cri_mount(m))
    log_dir = request.sandbox_config.log_directory or pod.log_directory
    spec = ContainerSpec(
        id=container_id,
        pod_id=pod.id,
        rootfs=RootfsSpec(lower=tuple(image.lower_dirs), upper=dirs.upper, work=dirs.work,
                          mountpoint=dirs.rootfs, readonly=sc.readonly_rootfs),
        process=ProcessSpec(
            args=tuple(args), env=tuple(env), cwd=_working_dir(config, image),
            tty=config.tty, stdin=config.stdin, stdin_once=config.stdin_once,
            user=security.user(sc, image.user),
            capabilities=caps, no_new_privs=sc.no_new_privs,
            oom_score_adj=res_json["oom_score_adj"],
            rlimits=tuple(container_spec.default_rlimits()),
            apparmor_profile=security.apparmor_profile(sc),
        ),
        namespaces=tuple(_namespaces(pod, sc, target_pid_ns)),
        hostname=None if pod.host_network else (hostname or None),
        userns=userns,
        mounts=tuple(spec_mounts),
        devices=tuple(mounts.devices(list(config.devices), sc.privileged, host_devices)),
        masked_paths=tuple(masked), readonly_paths=tuple(readonly_paths),
        privileged=sc.privileged,
        seccomp=seccomp_profile,
        cgroup=_cgroup(pod, container_id, Resources.from_json(res_json)),
        log_path=_log_path(log_dir, config.log_path),
        log_directory=posixpath.normpath(log_dir) if log_dir and config.log_path else None,
    )
    data = spec.to_json()
    if cdi_devices:
        inject.apply(data, cdi_devices)
    if data.get("hooks"):
        data["annotations"] = dict(config.annotations)  # the OCI state hooks receive
    return ContainerSpec.from_json(data)


def container_dirs(container_dir: str) -> ContainerDirs:
    return ContainerDirs(upper=os.path.join(container_dir, "upper"),
                         work=os.path.join(container_dir, "work"),
                         volumes=os.path.join(container_dir, "volumes"),
                         rootfs=os.path.join(container_dir, "rootfs"))
