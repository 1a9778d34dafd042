"""AppArmor profile handling for the container init.

ContainerSpec process.apparmor_profile: null / "" / "unconfined" = no confinement;
"runtime/default" = the runtime's default profile where AppArmor is enabled, a no-op where it is
not (as containerd does); "localhost/<name>" (or a bare name) = that profile, which must be
loaded: on a host without AppArmor it is an InvalidArgument naming the profile.
"""
from __future__ import annotations

import os

from pycri_common.errors import InvalidArgument

APPARMOR_DIR = "/sys/kernel/security/apparmor"
DEFAULT_PROFILE = "pycri-default"


def apparmor_enabled(sysfs_dir: str = APPARMOR_DIR) -> bool:
    return os.path.isdir(sysfs_dir)


def loaded_profiles(sysfs_dir: str = APPARMOR_DIR) -> set[str]:
    try:
        with open(os.path.join(sysfs_dir, "profiles")) as f:
            return {line.rsplit(" (", 1)[0] for line in f.read().splitlines() if line}
    except OSError:
        return set()


def resolve_profile(profile: str | None, sysfs_dir: str = APPARMOR_DIR) -> str | None:
    """The profile name to exec under, or None for no confinement. Raises InvalidArgument."""
    if not profile or profile == "unconfined":
        return None
    enabled = apparmor_enabled(sysfs_dir)
    if profile == "runtime/default":
        if not enabled or DEFAULT_PROFILE not in loaded_profiles(sysfs_dir):
            return None
        return DEFAULT_PROFILE
    name = profile.removeprefix("localhost/")
    if not enabled:
        raise InvalidArgument(f"process.apparmor_profile: profile {name!r} requested but "
                              "AppArmor is not enabled on this host")
    if name not in loaded_profiles(sysfs_dir):
        raise InvalidArgument(f"process.apparmor_profile: profile {name!r} is not loaded")
    return name


def set_exec_profile(name: str) -> None:
    """Confine the next execve of this process with profile `name`."""
    for path in ("/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"):
        try:
            with open(path, "w") as f:
                f.write(f"exec {name}")
            return
        except FileNotFoundError:
            continue
    raise InvalidArgument(f"process.apparmor_profile: cannot set profile {name!r}")
