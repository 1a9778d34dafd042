"""CRI mounts, the pod's /etc files, image volumes and devices -> ContainerSpec entries.

Rules (containerd's, with the CRI's recursive_read_only checks):
- host paths are resolved (symlinks followed on the host) and must exist;
- PROPAGATION_PRIVATE -> private, HOST_TO_CONTAINER -> rslave (the host mount holding the
  source must be shared or a slave), BIDIRECTIONAL -> rshared (it must be shared);
- recursive_read_only needs readonly, private propagation and kernel support;
- selinux_relabel is ignored (no SELinux here); per-mount uid/gid mappings are refused (in
  a pod user namespace the init idmaps every mount with the pod's mappings);
- /etc/hostname, /etc/hosts, /etc/resolv.conf come from the pod unless the request mounts
  them itself; they are read-only when the root filesystem is;
- image config VOLUMEs become empty read-write directories of the container (as containerd);
- Mount.image (image volumes, KEP-4639) are mounted read-only from the image's layers (a
  bind of a single layer, an overlay of lower dirs only otherwise); `readonly` must be set;
  `image_sub_path` (relative, no '..') is resolved inside the image by the init, and a
  missing one fails CreateContainer;
- /dev/shm is the pod's shared tmpfs for pod IPC, the host's for host IPC (containerd's rule).
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import stat
from collections.abc import Callable

from cri_server import host_features
from proto import api_pb2
from pycri_common.errors import InvalidArgument, NotFound
from runtime import container_spec
from runtime.container_spec import Device, Mount

PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "private",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}

POD_FILES = ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf")


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, optional fields) of the host's mounts, in table order."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left = line.split(" - ", 1)[0].split()
            out.append((left[4].replace("\\040", " "), " ".join(left[6:])))
    return out


def _source_mount(path: str) -> tuple[str, str]:
    """The mount (point, optional fields) that contains `path` (the last, longest match)."""
    best = ("/", "")
    for point, opts in _mountinfo():
        inside = path == point or path.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best[0]):
            best = (point, opts)
    return best


def check_propagation(source: str, propagation: str) -> None:
    if propagation == "private":
        return
    point, opts = _source_mount(source)
    shared = "shared:" in opts
    if propagation == "rshared" and not shared:
        raise InvalidArgument(
            f"mount propagation BIDIRECTIONAL for {source!r} needs the host mount {point!r} to "
            "be shared (mount --make-rshared)")
    if propagation == "rslave" and not (shared or "master:" in opts):
        raise InvalidArgument(
            f"mount propagation HOST_TO_CONTAINER for {source!r} needs the host mount {point!r} "
            "to be shared or a slave (mount --make-rshared or --make-rslave)")


def cri_mount(m: api_pb2.Mount) -> Mount:
    """One CRI host-path mount as a spec bind mount."""
    dest = m.container_path
    if not dest.startswith("/"):
        raise InvalidArgument(f"mount container_path {dest!r} must be an absolute path")
    if m.uidMappings or m.gidMappings:
        raise InvalidArgument(f"mount {dest!r}: per-mount uid/gid mappings are not supported "
                              "(in a pod with its own user namespace every mount is idmapped "
                              "with the pod's mappings)")
    if not m.host_path.startswith("/"):
        raise InvalidArgument(f"mount {dest!r}: host_path {m.host_path!r} must be absolute")
    source = os.path.realpath(m.host_path)
    if not os.path.exists(source):
        raise NotFound(f"mount {dest!r}: host path {m.host_path!r} does not exist"
                       + (f" (resolves to {source!r})" if source != m.host_path else ""))
    propagation = PROPAGATION.get(m.propagation)
    if propagation is None:
        raise InvalidArgument(f"mount {dest!r}: unknown propagation {m.propagation}")
    if m.recursive_read_only:
        if not m.readonly:
            raise InvalidArgument(f"mount {dest!r}: recursive_read_only requires readonly")
        if propagation != "private":
            raise InvalidArgument(f"mount {dest!r}: recursive_read_only requires private "
                                  f"propagation, got {propagation}")
        if not host_features.recursive_read_only_mounts():
            raise InvalidArgument(f"mount {dest!r}: recursive_read_only needs Linux 5.12 or "
                                  "later (mount_setattr)")
    check_propagation(source, propagation)
    return container_spec.bind_mount(source, dest, readonly=m.readonly,
                                      recursive_readonly=m.recursive_read_only,
                                      propagation=propagation)


def image_sub_path(m: api_pb2.Mount) -> str | None:
    """The checked `image_sub_path` (relative, no '..'), or None for the whole image."""
    sub = m.image_sub_path
    if not sub:
        return None
    if sub.startswith("/") or ".." in sub.split("/") or "\0" in sub:
        raise InvalidArgument(f"mount {m.container_path!r}: image_sub_path {sub!r} must be a "
                              "relative path inside the image without '..'")
    return posixpath.normpath(sub)


def image_mount(m: api_pb2.Mount, image_layers: Callable[[str], list[str]]) -> Mount:
    """A Mount.image volume: the image's layers (top first, from `image_layers(ref)`, called
    once the request is checked), read-only, not noexec; with `image_sub_path` only that part
    of the image (resolved inside it by the init). `propagation` is ignored: the image's
    snapshot has no mounts under it to propagate either way."""
    dest = m.container_path
    if not dest.startswith("/"):
        raise InvalidArgument(f"mount container_path {dest!r} must be an absolute path")
    if not m.readonly:
        raise InvalidArgument(f"mount {dest!r}: image volumes are read-only; set readonly")
    if m.host_path:
        raise InvalidArgument(f"mount {dest!r}: set either host_path or image, not both")
    if m.uidMappings or m.gidMappings:
        raise InvalidArgument(f"mount {dest!r}: per-mount uid/gid mappings are not supported "
                              "(in a pod with its own user namespace every mount is idmapped "
                              "with the pod's mappings)")
    sub = image_sub_path(m)
    lower_dirs = image_layers(m.image.image)
    if not lower_dirs:
        raise InvalidArgument(f"mount {dest!r}: image {m.image.image!r} has no layers")
    if len(lower_dirs) == 1:
        out = container_spec.bind_mount(lower_dirs[0], dest, readonly=True,
                                        recursive_readonly=m.recursive_read_only,
                                        options=("rbind", "nodev"))
    else:  # overlay with lower dirs only is read-only by construction
        out = Mount(destination=dest, type="overlay", source="overlay",
                    options=("ro", "nodev", "lowerdir=" + ":".join(lower_dirs)), readonly=True)
    return dataclasses.replace(out, sub_path=sub)


HOST_SHM = "/dev/shm"


def share_pod_shm(spec_mounts: list[Mount], ipc_mode: str, pod_shm: str) -> list[Mount]:
    """/dev/shm as containerd does: the host's for host IPC, the pod's tmpfs for a pod IPC
    namespace (shared by the pod's containers); a pod without one keeps the container's own
    tmpfs."""
    source = HOST_SHM if ipc_mode == "node" else pod_shm
    if not source:
        return spec_mounts
    shared = container_spec.bind_mount(source, "/dev/shm",
                                       options=("rbind", "nosuid", "nodev", "noexec"))
    return [shared if m.destination == "/dev/shm" else m for m in spec_mounts]


def pod_file_mounts(pod_files: dict[str, str], requested: set[str],
                    readonly: bool) -> list[Mount]:
    """The pod's hostname/hosts/resolv.conf, unless the request mounts that path itself."""
    out = []
    for dest in POD_FILES:
        src = pod_files.get(dest)
        if src and dest not in requested and os.path.exists(src):
            out.append(container_spec.bind_mount(src, dest, readonly=readonly))
    return out


def volume_mounts(volumes: list[str], requested: set[str], volumes_dir: str
                  ) -> list[Mount]:
    """Image VOLUMEs not covered by a request mount: fresh dirs under volumes_dir."""
    out = []
    for i, dest in enumerate(volumes):
        dest = os.path.normpath("/" + dest.lstrip("/"))
        if dest in requested or dest == "/":
            continue
        src = os.path.join(volumes_dir, str(i))
        os.makedirs(src, mode=0o755, exist_ok=True)
        out.append(container_spec.bind_mount(src, dest))
    return out


def devices(requested: list[api_pb2.Device], privileged: bool,
            host_devices: Callable[[], list[Device]] | None = None) -> list[Device]:
    out: list[Device] = []
    if privileged:
        out.extend((host_devices or all_host_devices)())
    seen = {d.container_path for d in out}
    for d in requested:
        if not d.host_path.startswith("/"):
            raise InvalidArgument(f"device host_path {d.host_path!r} must be absolute")
        cpath = d.container_path or d.host_path
        if not cpath.startswith("/"):
            raise InvalidArgument(f"device container_path {cpath!r} must be absolute")
        perms = d.permissions or "rwm"
        if not set(perms) <= set("rwm"):
            raise InvalidArgument(f"device {d.host_path!r}: permissions {perms!r} must be "
                                  "letters of 'rwm'")
        host = os.path.realpath(d.host_path)
        try:
            st = os.stat(host)
        except OSError:
            raise NotFound(f"device {d.host_path!r} does not exist on the host") from None
        if stat.S_ISDIR(st.st_mode):
            for dev in _devices_under(host):
                rel = os.path.relpath(dev.host_path, host)
                dev = Device(dev.host_path, os.path.join(cpath, rel), perms)
                if dev.container_path not in seen:
                    out.append(dev)
                    seen.add(dev.container_path)
            continue
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise InvalidArgument(f"device {d.host_path!r} is not a device node")
        if cpath in seen:
            out = [x for x in out if x.container_path != cpath]
        out.append(Device(host_path=host, container_path=cpath, permissions=perms))
        seen.add(cpath)
    return out


def _devices_under(top: str) -> list[Device]:
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue", "fd")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                found.append(Device(host_path=path, container_path=path))
    return sorted(found, key=lambda d: d.host_path)


def all_host_devices() -> list[Device]:
    """Every device node under the host's /dev (what a privileged container gets)."""
    return [d for d in _devices_under("/dev")
            if d.host_path not in ("/dev/console", "/dev/ptmx", "/dev/tty")]
