"""Intel RDT / AMD QoS through the resctrl filesystem (OCI runtime spec "linux.intelRdt").

ContainerSpec "intel_rdt" = {"root": "/sys/fs/resctrl", "clos_id": str, "schemata": [lines],
"monitoring": bool, "owned": bool}: the container's processes join the class of service
(CLOS) group `<root>/<clos_id>`, created when missing; `schemata` lines (e.g. "L3:0=ffff",
"MB:0=50") are written to its schemata file; with `monitoring` a monitoring group
`<clos>/mon_groups/<container id>` is made and joined too. `owned` groups (named after the
container because the spec gave no closID) are removed with the container.
Standard library only: the container init imports it.
"""
from __future__ import annotations

import os
from typing import Any

from pycri_common.errors import FailedPrecondition, InvalidArgument

DEFAULT_ROOT = "/sys/fs/resctrl"


def validate(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument("container spec: intel_rdt: must be an object or null")
    root = value.get("root") or DEFAULT_ROOT
    clos = value.get("clos_id")
    lines = value.get("schemata") or []
    if not isinstance(root, str) or not root.startswith("/"):
        raise InvalidArgument("container spec: intel_rdt.root: must be an absolute path")
    if not isinstance(clos, str) or not clos or clos in (".", "..") or "/" in clos \
            or "\n" in clos:
        raise InvalidArgument(f"container spec: intel_rdt.clos_id: {clos!r} is not a group name")
    if not isinstance(lines, list) or not all(isinstance(x, str) and "\n" not in x
                                              for x in lines):
        raise InvalidArgument("container spec: intel_rdt.schemata: must be a list of lines")
    return {"root": root, "clos_id": clos, "schemata": list(lines),
            "monitoring": bool(value.get("monitoring")), "owned": bool(value.get("owned"))}


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise FailedPrecondition(f"intelRdt: writing {text.strip()!r} to {path}: "
                                 f"{e.strerror}") from e


def join(rdt: dict[str, Any], container_id: str, pid: int) -> None:
    """Puts `pid` into the container's CLOS (and monitoring) group."""
    root = rdt["root"]
    if not os.path.isdir(os.path.join(root, "info")):
        raise FailedPrecondition(f"intelRdt: the resctrl filesystem is not mounted at {root}")
    group = os.path.join(root, rdt["clos_id"])
    try:
        os.mkdir(group, 0o755)
    except FileExistsError:
        pass
    except OSError as e:
        raise FailedPrecondition(f"intelRdt: creating {group}: {e.strerror}") from e
    if rdt["schemata"]:
        _write(os.path.join(group, "schemata"), "\n".join(rdt["schemata"]) + "\n")
    _write(os.path.join(group, "tasks"), f"{pid}\n")
    if rdt["monitoring"]:
        mon = os.path.join(group, "mon_groups", container_id)
        try:
            os.makedirs(mon, 0o755, exist_ok=True)
        except OSError as e:
            raise FailedPrecondition(f"intelRdt: creating {mon}: {e.strerror}") from e
        _write(os.path.join(mon, "tasks"), f"{pid}\n")


def remove(rdt: dict[str, Any] | None, container_id: str) -> list[str]:
    """Removes what join() made for the container (its monitoring group, its owned CLOS);
    returns what could not be removed (for a warning)."""
    if not rdt:
        return []
    group = os.path.join(rdt["root"], rdt["clos_id"])
    paths = [os.path.join(group, "mon_groups", container_id)] if rdt["monitoring"] else []
    if rdt["owned"]:
        paths.append(group)
    failed = []
    for path in paths:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            failed.append(f"{path}: {e.strerror}")
    return failed
