"""AppArmor profile handling for the container init.

ContainerSpec process.apparmor_profile: null / "" / "unconfined" = no confinement;
"runtime/default" = the runtime's default profile where AppArmor is enabled, a no-op where it is
not (as containerd does); "localhost/<name>" (or a bare name) = that profile, which must be
loaded: on a host without AppArmor it is an InvalidArgument naming the profile.

The default profile is pycri's own (runtime/data/apparmor_default.profile); the daemon loads it
with apparmor_parser (ensure_default_profile) at start-up and again before a container asks for
it if it was unloaded meanwhile, as containerd does with its cri-containerd.apparmor.d.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from importlib import resources

from pycri_common.errors import FailedPrecondition, InvalidArgument

APPARMOR_DIR = "/sys/kernel/security/apparmor"
DEFAULT_PROFILE = "pycri-default"
PARSER = "apparmor_parser"


def apparmor_enabled(sysfs_dir: str = APPARMOR_DIR) -> bool:
    return os.path.isdir(sysfs_dir)


def loaded_profiles(sysfs_dir: str = APPARMOR_DIR) -> set[str]:
    try:
        with open(os.path.join(sysfs_dir, "profiles")) as f:
            return {line.rsplit(" (", 1)[0] for line in f.read().splitlines() if line}
    except OSError:
        return set()


def default_profile_text() -> str:
    return (resources.files("runtime") / "data" / "apparmor_default.profile").read_text()


def load_profile(text: str, parser: str = PARSER) -> None:
    """Load (or replace) the profile(s) in `text` into the kernel with apparmor_parser."""
    exe = shutil.which(parser)
    if exe is None:
        raise FailedPrecondition(f"AppArmor is enabled but {parser} is missing (package "
                                 "apparmor): cannot load the default profile")
    try:
        done = subprocess.run([exe, "-K", "-r"], input=text.encode(), capture_output=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FailedPrecondition(f"{parser}: {e}") from e
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()[-500:]
        raise FailedPrecondition(f"{parser} failed ({done.returncode}): {err}")


def ensure_default_profile(sysfs_dir: str = APPARMOR_DIR, parser: str = PARSER) -> bool:
    """Load pycri's default profile unless it is loaded; False where AppArmor is off."""
    if not apparmor_enabled(sysfs_dir):
        return False
    if DEFAULT_PROFILE not in loaded_profiles(sysfs_dir):
        load_profile(default_profile_text(), parser)
    return True


def resolve_profile(profile: str | None, sysfs_dir: str = APPARMOR_DIR) -> str | None:
    """The profile name to exec under, or None for no confinement. Raises InvalidArgument."""
    if not profile or profile == "unconfined":
        return None
    enabled = apparmor_enabled(sysfs_dir)
    if profile == "runtime/default":
        if not enabled:
            return None
        if DEFAULT_PROFILE not in loaded_profiles(sysfs_dir):
            # never silently unconfined: the daemon loads it before it hands out such a spec
            raise InvalidArgument(f"process.apparmor_profile: the default profile "
                                  f"{DEFAULT_PROFILE!r} is not loaded")
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
