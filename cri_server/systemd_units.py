"""The systemd cgroup driver's units, as the daemon drives them (cgroup_driver = "systemd").

Names and properties: runtime.cgroups.systemd_units (pure); D-Bus: runtime.cgroups.systemd_dbus.
- Pod: its slice is started as a transient slice when systemd has none of that name (runc and
  containerd do the same for kubelet's pod slices); pycri's own pod slices (no cgroup_parent in
  the request) get the pod's resources as properties and are stopped on RemovePodSandbox,
  with their empty parent slices up to the configured parent.
- The pause-holder: the delegated scope pycri-<pod id>.scope, started with its pid once the
  shim reported it (the shim does not move it itself under this driver).
- A container: the delegated scope pycri-<container id>.scope must exist before the container
  init joins it (the init is forked by the stdlib-only shim and joins its cgroup early, before
  its cgroup namespace), and a scope cannot start empty. So the daemon starts it with a
  placeholder process of its own (the static pause program), the init joins the scope's
  cgroup and writes the resource files, and the placeholder is killed once CreateContainer
  has its answer. Removal is StopUnit + ResetFailedUnit (and the cgroupfs clean-up after it,
  for sub-cgroups a delegated payload left).
"""
from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

from pycri_common.errors import FailedPrecondition
from runtime.cgroups import systemd_units as su
from runtime.cgroups.mode import CGROUP_ROOT
from runtime.shim.tinypause import elf_image

log = logging.getLogger("pycri.systemd")


def client() -> Any:
    """The shared D-Bus connection to systemd (FailedPrecondition saying what to do when systemd
    is not PID 1 or its bus does not answer)."""
    from runtime.cgroups import systemd_dbus
    return systemd_dbus.shared()


def check_available() -> None:
    client()


def _slice_of(path: str) -> str:
    return su.unit_of_path(path)


# -- pods -------------------------------------------------------------------------------------

def start_pod_slice(path: str, owned: bool, resources: dict[str, Any] | None) -> None:
    """The pod slice at cgroup `path`: started when systemd has none running."""
    name = _slice_of(path)
    props = su.slice_properties(name, f"pycri pod slice {name}",
                                resources if owned else None)
    t0 = time.monotonic()
    started = client().start_transient_unit(name, props, exists_ok=True)
    log.debug("pod slice %s %s in %.1f ms", name, "started" if started else "exists",
              (time.monotonic() - t0) * 1000)


def start_pause_scope(pod_path: str, pause_scope_path: str, pod_id: str, pid: int) -> None:
    name = su.unit_of_path(pause_scope_path)
    client().start_transient_unit(name, su.scope_properties(
        _slice_of(pod_path), [pid], f"pycri pod sandbox {pod_id}"))


def update_pod_slice(path: str, resources: dict[str, Any]) -> None:
    client().set_properties(_slice_of(path), su.resource_properties(resources))


def stop_pod(pod_path: str, pause_scope_path: str, owned: bool, prune_to: str) -> None:
    """Stops the pause-holder's scope and, for a slice pycri owns, the slice and its parent
    slices that are left empty (up to prune_to)."""
    sd = client()
    if pause_scope_path != pod_path:
        sd.stop_unit(su.unit_of_path(pause_scope_path))
    if not owned:
        return
    sd.stop_unit(_slice_of(pod_path))
    parent = posixpath.dirname(pod_path)
    while prune_to and parent not in ("/", "") and (parent == prune_to
                                                     or parent.startswith(prune_to + "/")):
        directory = CGROUP_ROOT + parent
        try:
            busy = any(e.is_dir() for e in os.scandir(directory))
        except FileNotFoundError:
            busy = False
        if busy:
            break
        sd.stop_unit(_slice_of(parent))
        parent = posixpath.dirname(parent)


# -- containers -------------------------------------------------------------------------------

_placeholder_lock = threading.Lock()
_placeholder_fd = -1


def _placeholder_argv() -> tuple[list[str], tuple[int, ...]]:
    """A process that does nothing until killed: the static pause program from a memfd (no
    interpreter to start), or `sleep infinity` where there is no such program."""
    global _placeholder_fd
    image = elf_image()
    if image is None:
        return ["sleep", "infinity"], ()
    with _placeholder_lock:
        if _placeholder_fd < 0:
            fd = os.memfd_create("pycri-scope-holder", os.MFD_CLOEXEC)
            try:
                os.write(fd, image)
                # a read-only descriptor of its own: a file open for writing cannot be
                # executed (ETXTBSY)
                _placeholder_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                os.close(fd)
    return [f"/proc/self/fd/{_placeholder_fd}"], (_placeholder_fd,)


@contextlib.contextmanager
def container_scope(path: str, container_id: str, resources: dict[str, Any]) -> Iterator[None]:
    """Starts the container's scope (cgroup `path`) around the shim's create: the scope holds a
    placeholder until the block ends, by which time the container init is in it. The scope is
    stopped again when the block fails."""
    name = su.unit_of_path(path)
    argv, fds = _placeholder_argv()
    holder = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              close_fds=True)
    try:
        t0 = time.monotonic()
        client().start_transient_unit(name, su.scope_properties(
            _slice_of(posixpath.dirname(path)), [holder.pid],
            f"pycri container {container_id}", resources))
        log.debug("scope %s started in %.1f ms", name, (time.monotonic() - t0) * 1000)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                client().stop_unit(name)
            raise
    finally:
        holder.kill()
        holder.wait()


def stop_container_scope(path: str) -> None:
    client().stop_unit(su.unit_of_path(path))


def update_container_scope(path: str, resources: dict[str, Any]) -> None:
    client().set_properties(su.unit_of_path(path), su.resource_properties(resources))


def require(driver: str) -> None:
    """FailedPrecondition before anything is made when the driver is systemd and it is not
    there (RunPodSandbox, as in containerd)."""
    if driver == "systemd":
        check_available()


__all__ = ["FailedPrecondition", "check_available", "container_scope", "require",
           "start_pause_scope", "start_pod_slice", "stop_container_scope", "stop_pod",
           "update_container_scope", "update_pod_slice"]
