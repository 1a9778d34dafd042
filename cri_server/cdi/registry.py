"""The CDI registry: spec directories -> devices by qualified name, reloaded on change.

Each lookup first checks whether anything changed: one stat per spec directory (a file added,
removed or renamed in changes the directory's mtime) and one per spec file (rewritten in
place); only changed files are read and parsed again. With a few files that is a few
microseconds per CreateContainer.

Directories are given in increasing priority: a device defined in a later directory replaces
the same name from an earlier one. Two files of the same directory defining one device is a
conflict: the device is dropped and both files are reported. A file that cannot be read or
parsed is reported (log and Status verbose info) and the other files keep working.
Files are `*.json` and `*.yaml` directly in a directory (not below it); a symlink to
a regular file is followed, anything else (FIFO, device, directory) is reported.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from typing import Any

from cri_server.cdi import names
from cri_server.cdi.document import MAX_SPEC_BYTES, is_spec_file, load_document
from cri_server.cdi.spec import Device, Spec, parse_spec
from pycri_common.errors import FailedPrecondition, InvalidArgument, PycriError
from pycri_common.outside_files import read_regular_file
from pycri_common.text import clip, shorten

log = logging.getLogger(__name__)

MAX_FILES_PER_DIR = 1024
MAX_LISTED = 20  # names shown in an error message


@dataclass(frozen=True)
class Resolved:
    """A requested device found in the registry."""
    name: str          # the qualified name as requested
    device: Device
    spec: Spec


FileKey = tuple[int, int, int, int, int]  # dev, ino, size, mtime_ns, ctime_ns


@dataclass
class _File:
    key: FileKey | None
    spec: Spec | None
    error: str


class Registry:
    def __init__(self, spec_dirs: list[str], enabled: bool = True) -> None:
        self.spec_dirs = list(spec_dirs)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._dir_keys: dict[str, tuple[int, int, int] | None] = {}
        self._dir_files: dict[str, list[str]] = {}
        self._files: dict[str, _File] = {}
        self._devices: dict[str, Resolved] = {}
        self._kinds: dict[str, list[str]] = {}
        self._errors: dict[str, str] = {}
        self._loaded = False

    # ------------------------------------------------------------------ refresh
    def refresh(self) -> None:
        """Re-reads what changed since the last call (cheap when nothing did)."""
        with self._lock:
            changed = not self._loaded
            for d in self.spec_dirs:
                changed |= self._scan_dir(d)
            for d in self.spec_dirs:
                for path in self._dir_files.get(d, []):
                    changed |= self._check_file(path)
            if changed:
                self._rebuild()
                self._loaded = True

    def _scan_dir(self, d: str) -> bool:
        try:
            st = os.stat(d)
            key: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            key = None
        if self._loaded and self._dir_keys.get(d, 0) == key:
            return False
        self._dir_keys[d] = key
        files: list[str] = []
        if key is not None:
            try:
                with os.scandir(d) as it:
                    for entry in it:
                        if is_spec_file(entry.name):
                            files.append(os.path.join(d, entry.name))
            except OSError as e:
                log.warning("CDI spec directory %s: %s", d, e.strerror)
        files.sort()
        if len(files) > MAX_FILES_PER_DIR:
            log.warning("CDI spec directory %s: %d files, only the first %d are read", d,
                        len(files), MAX_FILES_PER_DIR)
            files = files[:MAX_FILES_PER_DIR]
        gone = set(self._dir_files.get(d, [])) - set(files)
        for path in gone:
            self._files.pop(path, None)
        self._dir_files[d] = files
        return True

    def _check_file(self, path: str) -> bool:
        try:
            st = os.stat(path)
            key: FileKey | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                   st.st_ctime_ns)
            is_dir = stat.S_ISDIR(st.st_mode)
        except OSError:
            key, is_dir = None, False
        old = self._files.get(path)
        if old is not None and old.key == key and key is not None:
            return False
        if is_dir:
            entry = _File(key, None, "")  # a directory named like a spec file: not a spec
        else:
            entry = self._load(path, key)
        self._files[path] = entry
        if entry.error and (old is None or old.error != entry.error):
            log.warning("CDI spec %s is not used: %s", path, entry.error)
        elif entry.spec is not None:
            log.info("CDI spec %s: kind %s, %d devices", path, entry.spec.kind,
                     len(entry.spec.devices))
        return True

    @staticmethod
    def _load(path: str, key: FileKey | None) -> _File:
        try:
            data = read_regular_file(path, MAX_SPEC_BYTES, "CDI spec")
            spec = parse_spec(load_document(data, path), path)
        except PycriError as e:
            return _File(key, None, clip(str(e), 1000))
        return _File(key, spec, "")

    def _rebuild(self) -> None:
        devices: dict[str, Resolved] = {}
        owner_path: dict[str, tuple[int, str]] = {}
        conflicts: set[str] = set()
        errors: dict[str, str] = {}
        for prio, d in enumerate(self.spec_dirs):
            for path in self._dir_files.get(d, []):
                f = self._files.get(path)
                if f is None:
                    continue
                if f.error:
                    errors[path] = f.error
                if f.spec is None:
                    continue
                f.spec.priority = prio
                for dev in f.spec.devices.values():
                    qname = f"{f.spec.kind}={dev.name}"
                    prev = owner_path.get(qname)
                    if prev is not None and prev[0] == prio:
                        conflicts.add(qname)
                        msg = f"device {qname} is defined both in {prev[1]} and {path}"
                        errors[path] = msg
                        errors[prev[1]] = msg
                        continue
                    owner_path[qname] = (prio, path)
                    devices[qname] = Resolved(qname, dev, f.spec)
        for qname in conflicts:
            devices.pop(qname, None)
        kinds: dict[str, list[str]] = {}
        for qname in sorted(devices):
            kind, _, dev_name = qname.partition("=")
            kinds.setdefault(kind, []).append(dev_name)
        self._devices, self._kinds, self._errors = devices, kinds, errors

    # ------------------------------------------------------------------ lookup
    def resolve(self, requested: list[str]) -> list[Resolved]:
        """The devices of `requested` (qualified names, checked), in order; InvalidArgument
        naming an unknown kind or device and what the registry holds."""
        if not requested:
            return []
        if not self.enabled:
            raise FailedPrecondition(f"CDI devices {shorten(', '.join(requested))} were "
                                     "requested but CDI is disabled (config cdi.enable)")
        self.refresh()
        with self._lock:
            devices, kinds, errors = self._devices, self._kinds, self._errors
        out = []
        for name in requested:
            q = names.parse_qualified(name)
            found = devices.get(str(q))
            if found is not None:
                out.append(found)
                continue
            broken = f"; spec files with errors: {_listed(sorted(errors))}" if errors else ""
            if q.kind not in kinds:
                raise InvalidArgument(
                    f"CDI device {shorten(name)}: no CDI spec of kind {shorten(q.kind)} in "
                    f"{', '.join(self.spec_dirs)} (kinds known: {_listed(sorted(kinds))}){broken}")
            raise InvalidArgument(
                f"CDI device {shorten(name)} not found: kind {q.kind} has devices "
                f"{_listed(kinds[q.kind])}{broken}")
        return out

    def status(self) -> dict[str, Any]:
        """What the registry holds, for Status verbose info."""
        self.refresh()
        with self._lock:
            return {"enabled": self.enabled, "specDirs": list(self.spec_dirs),
                    "devices": sorted(self._devices),
                    "specs": sorted({r.spec.path for r in self._devices.values()}),
                    "errors": dict(self._errors)}


def _listed(items: list[str]) -> str:
    if not items:
        return "none"
    shown = ", ".join(clip(i, 120) for i in items[:MAX_LISTED])
    more = len(items) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")
