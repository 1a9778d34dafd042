"""The container's security context -> ContainerSpec pieces (containerd's semantics).

- privileged: every capability, no seccomp, no AppArmor, no masked/read-only paths, rw /sys,
  every host device; only allowed in a privileged pod.
- capabilities: default set, add/drop incl. "ALL", ambient (runtime.container_spec).
- user: run_as_username wins over run_as_user; run_as_group needs one of them; with neither,
  the image's USER applies.
- masked/readonly paths: exactly as sent (an empty list means none), cleared when privileged.
- seccomp: `seccomp` field, else the deprecated `seccomp_profile_path`; unset = unconfined;
  RuntimeDefault = the project's profile; Localhost = a JSON file on the host.
- AppArmor: the same fallback order (`apparmor` wins over `apparmor_profile`), but with neither
  set RuntimeDefault applies, as in Kubernetes and containerd; RuntimeDefault loads pycri's
  default profile first if it is not loaded (a no-op where AppArmor is off); a Localhost
  profile needs AppArmor and the profile loaded.
"""
from __future__ import annotations

from typing import Any

from cri_server.containers.image_config import UserSpec, parse_user_string
from proto import api_pb2
from pycri_common.errors import InvalidArgument
from runtime import apparmor, container_spec, seccomp

_SP = api_pb2.SecurityProfile


def capabilities(sc: api_pb2.LinuxContainerSecurityContext) -> container_spec.Capabilities:
    caps = sc.capabilities
    return container_spec.compute_capabilities(
        add=list(caps.add_capabilities), drop=list(caps.drop_capabilities),
        add_ambient=list(caps.add_ambient_capabilities), privileged=sc.privileged)


def user(sc: api_pb2.LinuxContainerSecurityContext, image_user: str) -> container_spec.UserSpec:
    """The spec's process.user: who the process runs as, its groups and the groups policy."""
    username = sc.run_as_username
    uid = sc.run_as_user.value if sc.HasField("run_as_user") else None
    gid = sc.run_as_group.value if sc.HasField("run_as_group") else None
    for what, value in (("run_as_user", uid), ("run_as_group", gid)):
        if value is not None and not 0 <= value < 2**32 - 1:
            raise InvalidArgument(f"security_context.{what} {value} is out of range")
    if not username and uid is None:
        if gid is not None:
            raise InvalidArgument(f"security_context.run_as_group ({gid}) is set without "
                                  "run_as_user or run_as_username")
        parsed = parse_user_string(image_user) if image_user else UserSpec()
    else:
        parsed = UserSpec(username=username or None, uid=None if username else uid, gid=gid)
    groups = list(sc.supplemental_groups)
    for g in groups:
        if not 0 <= g < 2**32 - 1:
            raise InvalidArgument(f"security_context.supplemental_groups: {g} is out of range")
    policy = "Strict" if sc.supplemental_groups_policy == api_pb2.Strict else "Merge"
    return container_spec.UserSpec(uid=parsed.uid, gid=parsed.gid, username=parsed.username,
                                   groupname=parsed.groupname,
                                   supplemental_groups=tuple(groups), policy=policy)


def masked_and_readonly_paths(sc: api_pb2.LinuxContainerSecurityContext
                              ) -> tuple[list[str], list[str]]:
    if sc.privileged:
        return [], []
    for p in (*sc.masked_paths, *sc.readonly_paths):
        if not p.startswith("/"):
            raise InvalidArgument(f"masked/readonly path {p!r} must be absolute")
    return list(sc.masked_paths), list(sc.readonly_paths)


def _profile(field: api_pb2.SecurityProfile | None, legacy_path: str) -> tuple[str, str]:
    """(kind, ref) with kind "unconfined" | "runtime_default" | "localhost"."""
    if field is not None:
        if field.profile_type == _SP.RuntimeDefault:
            return "runtime_default", ""
        if field.profile_type == _SP.Unconfined:
            return "unconfined", ""
        if not field.localhost_ref:
            raise InvalidArgument("security profile of type Localhost needs localhost_ref")
        return "localhost", field.localhost_ref
    if legacy_path in ("", "unconfined"):
        return "unconfined", ""
    if legacy_path in ("runtime/default", "docker/default"):
        return "runtime_default", ""
    if legacy_path.startswith("localhost/"):
        return "localhost", legacy_path[len("localhost/"):]
    raise InvalidArgument(f"unknown security profile {legacy_path!r} (expected runtime/default, "
                          "unconfined or localhost/<path>)")


def seccomp_profile(sc: api_pb2.LinuxContainerSecurityContext,
                    caps: container_spec.Capabilities) -> dict[str, Any] | None:
    if sc.privileged:
        return None
    kind, ref = _profile(sc.seccomp if sc.HasField("seccomp") else None,
                         sc.seccomp_profile_path)
    if kind == "runtime_default":
        return seccomp.runtime_default_profile(list(caps.bounding))
    if kind == "localhost":
        if not ref.startswith("/"):
            raise InvalidArgument(f"seccomp Localhost profile {ref!r} must be an absolute "
                                  "path on the node")
        return seccomp.load_localhost_profile(ref)
    return None


def apparmor_profile(sc: api_pb2.LinuxContainerSecurityContext) -> str | None:
    if sc.privileged:
        return None
    if sc.HasField("apparmor") or sc.apparmor_profile:
        kind, ref = _profile(sc.apparmor if sc.HasField("apparmor") else None,
                             sc.apparmor_profile)
    else:
        kind, ref = "runtime_default", ""
    if kind == "unconfined":
        return None
    if kind == "runtime_default":
        apparmor.ensure_default_profile()  # FailedPrecondition when it cannot be loaded
    # kubelet and critest send localhost_ref as "localhost/<name>"; the profile is <name>
    ref = ref.removeprefix("localhost/")
    value = "runtime/default" if kind == "runtime_default" else f"localhost/{ref}"
    apparmor.resolve_profile(value)  # fails early: not enabled / not loaded
    return value
