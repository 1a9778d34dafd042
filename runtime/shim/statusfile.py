"""Per-container status files: <shim_dir>/containers/<cid>.json (ContainerState).

Written atomically (temp + rename) by the shim on create, start and exit; read
by the daemon (runtime.shim_client.read_final_states) when the shim is gone.
Stdlib only.

Status files are not fsync'ed (each fsync cost 2-4 ms of CreateContainer and
StartContainer on ext4): the rename already makes them atomic for what they
guard against, a crash or kill -9 of the shim or daemon (the page cache
survives that). After a machine crash every container is dead anyway, and a
file the crash left empty is skipped by read_states().
"""
from __future__ import annotations

import json
import os
from typing import Any


def containers_dir(shim_dir: str) -> str:
    return os.path.join(shim_dir, "containers")


def status_path(shim_dir: str, container_id: str) -> str:
    return os.path.join(containers_dir(shim_dir), container_id + ".json")


def write_atomic(path: str, data: bytes, durable: bool = True) -> None:
    """temp + rename; with durable also fsync of the file and of the directory."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if not durable:
        return
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_state(shim_dir: str, container_id: str, state: dict[str, Any]) -> None:
    write_atomic(status_path(shim_dir, container_id), json.dumps(state).encode(),
                 durable=False)


def spec_path(shim_dir: str, container_id: str) -> str:
    """<cid>.spec: the ContainerSpec JSON the shim got (contract 4), for a successor shim
    that adopts the pod (runtime.shim.adopt)."""
    return os.path.join(containers_dir(shim_dir), container_id + ".spec")


def write_spec(shim_dir: str, container_id: str, spec: dict[str, Any]) -> None:
    write_atomic(spec_path(shim_dir, container_id), json.dumps(spec).encode(), durable=False)


def read_spec(shim_dir: str, container_id: str) -> Any:
    """The JSON of <cid>.spec, or None when it is missing or unreadable."""
    try:
        with open(spec_path(shim_dir, container_id), "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def remove_state(shim_dir: str, container_id: str) -> None:
    """The status file, the spec and what the container's keeper left (its exit record and
    pid file)."""
    base = os.path.join(containers_dir(shim_dir), container_id)
    for suffix in (".json", ".spec", ".exit", ".keeper"):
        try:
            os.unlink(base + suffix)
        except FileNotFoundError:
            pass


def read_states(shim_dir: str) -> dict[str, dict[str, Any]]:
    """Every container state recorded under shim_dir (unreadable files skipped)."""
    states: dict[str, dict[str, Any]] = {}
    try:
        names = os.listdir(containers_dir(shim_dir))
    except FileNotFoundError:
        return states
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(containers_dir(shim_dir), name), "rb") as f:
                states[name[:-5]] = json.loads(f.read())
        except (OSError, ValueError):
            continue
    return states
