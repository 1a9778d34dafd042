"""cgroup path naming for the cgroupfs and systemd drivers (pure functions, no I/O).

cgroupfs: kubelet's cgroup_parent is a path like /kubepods/burstable/pod<uid>; a container's
cgroup is <pod cgroup>/<container id>.
systemd: kubelet's cgroup_parent is a slice name like kubepods-burstable-pod<uid>.slice; slices
nest by their dash-separated prefix (a-b-c.slice lives at /a.slice/a-b.slice/a-b-c.slice) and a
container is a scope "<prefix>-<id>.scope" inside its pod slice. runc-style "slice:prefix:name"
strings are accepted too. The systemd driver's units themselves (slices and scopes started over
D-Bus) are runtime.cgroups.systemd_units and cri_server.systemd_units.
"""
from __future__ import annotations

import posixpath

from pycri_common.errors import InvalidArgument

SCOPE_PREFIX = "pycri"


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise InvalidArgument(f"{what}: invalid cgroup name {name!r}")


def cgroupfs_path(parent: str, name: str | None = None) -> str:
    """Normalised absolute cgroupfs path parent[/name]."""
    if not isinstance(parent, str) or ".." in parent.split("/"):
        raise InvalidArgument(f"cgroup parent {parent!r}: must be a path without '..'")
    path = posixpath.normpath("/" + parent.strip("/")) if parent.strip("/") else "/"
    if name is not None:
        _check_name(name, "cgroup")
        path = posixpath.join(path, name)
    return path


def expand_slice(slice_name: str) -> str:
    """'kubepods-burstable-pod1.slice' -> '/kubepods.slice/kubepods-burstable.slice/
    kubepods-burstable-pod1.slice'; '-.slice' (the root slice) -> '/'."""
    if slice_name == "-.slice":
        return "/"
    if (not slice_name.endswith(".slice") or "/" in slice_name
            or slice_name == ".slice"):
        raise InvalidArgument(f"systemd cgroup parent {slice_name!r}: must be a slice name "
                              "like kubepods-burstable.slice")
    base = slice_name[: -len(".slice")]
    if base.startswith("-") or base.endswith("-") or "--" in base:
        raise InvalidArgument(f"systemd slice {slice_name!r}: invalid dashes")
    parts = base.split("-")
    path = ""
    prefix = ""
    for part in parts:
        prefix = f"{prefix}-{part}" if prefix else part
        path += f"/{prefix}.slice"
    return path


def systemd_pod_slice(parent_slice: str, pod_uid: str) -> str:
    """Slice name of a pod under `parent_slice`: dashes of the uid become underscores."""
    expand_slice(parent_slice)  # validates
    base = "" if parent_slice == "-.slice" else parent_slice[: -len(".slice")] + "-"
    return f"{base}pod{pod_uid.replace('-', '_')}.slice"


def parse_systemd_path(value: str) -> tuple[str, str, str]:
    """'slice:prefix:name' -> (slice, prefix, name)."""
    parts = value.split(":")
    if len(parts) != 3:
        raise InvalidArgument(f"systemd cgroup path {value!r}: expected slice:prefix:name")
    return parts[0], parts[1], parts[2]


def systemd_scope_path(slice_name: str, prefix: str, name: str) -> str:
    """Filesystem path of scope <prefix>-<name>.scope in <slice>."""
    _check_name(name, "scope")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return posixpath.join(expand_slice(slice_name), unit)


def parent_slice(cgroup_parent: str) -> str:
    """The slice a systemd-driver cgroup_parent names: kubelet gives a slice name, others
    (critest: '/test.slice') a path whose last component is the slice, as containerd reads it."""
    base = posixpath.basename(cgroup_parent.rstrip("/")) if "/" in cgroup_parent else cgroup_parent
    expand_slice(base)  # validates
    return base


def pod_cgroup_path(driver: str, cgroup_parent: str) -> str:
    """The pod cgroup's filesystem path from CRI's cgroup_parent (kubelet names the pod)."""
    if driver == "systemd":
        return expand_slice(parent_slice(cgroup_parent))
    if driver == "cgroupfs":
        return cgroupfs_path(cgroup_parent)
    raise InvalidArgument(f"cgroup driver {driver!r}: must be cgroupfs or systemd")


def container_cgroup_path(driver: str, cgroup_parent: str, container_id: str) -> str:
    """The container cgroup's filesystem path inside its pod's."""
    if driver == "systemd":
        if cgroup_parent.count(":") == 2:
            slice_name, prefix, name = parse_systemd_path(cgroup_parent)
            return systemd_scope_path(slice_name, prefix, name)
        return systemd_scope_path(cgroup_parent, SCOPE_PREFIX, container_id)
    if driver == "cgroupfs":
        return cgroupfs_path(cgroup_parent, container_id)
    raise InvalidArgument(f"cgroup driver {driver!r}: must be cgroupfs or systemd")


def systemd_path_to_fs(value: str) -> str:
    """'kubepods-pod1.slice:pycri:abc' -> '/kubepods.slice/kubepods-pod1.slice/pycri-abc.scope'."""
    return systemd_scope_path(*parse_systemd_path(value))


def spec_cgroup_path(cgroup_spec: dict[str, object]) -> str:
    """Filesystem cgroup path of a ContainerSpec "cgroup" object (either driver, any form)."""
    path = str(cgroup_spec.get("path") or "")
    if cgroup_spec.get("driver") == "systemd" and path.count(":") == 2:
        return systemd_path_to_fs(path)
    return path


def pause_cgroup_path(pod_path: str, driver: str, pod_id: str, cgroup_mode: str) -> str:
    """Where the pod's pause-holder goes. v1/hybrid: the pod cgroup itself. v2: a leaf of its
    own (<pod>/<pod id>, systemd: <pod slice>/pycri-<pod id>.scope), as containerd's sandbox
    container: v2 refuses to enable controllers in a cgroup that holds processes, and
    creating a container cgroup enables them in the pod cgroup."""
    if cgroup_mode != "v2":
        return pod_path
    _check_name(pod_id, "pod id")
    leaf = f"{SCOPE_PREFIX}-{pod_id}.scope" if driver == "systemd" else pod_id
    return posixpath.join(pod_path, leaf)
