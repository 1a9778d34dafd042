"""On-disk cache of CNI attachments, one JSON file per (container id, network, ifname).

Each entry holds the configuration list used for ADD, the CNI_ARGS and capability args, the
netns path and (once ADD finished) the result. The entry is written *before* ADD runs (result
null), so a daemon killed in the middle of ADD still knows what to DEL; DEL then works after a
restart or when the conf dir changed, as libcni's result cache allows. Files are written
atomically (temp file + fsync + rename + dir fsync). The file name
``<container id>:<network>:<ifname>.json`` is unambiguous because none of the three may
contain ':' (validated by the caller).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from pycri_common.fsutil import fsync_dir

CACHE_KIND = "pycriCniCacheV1"


@dataclass
class CacheEntry:
    container_id: str
    network: str
    ifname: str
    netns: str
    config: dict[str, Any]  # the configuration list as used (raw JSON document)
    cni_args: list[list[str]]  # [[key, value], ...]
    capability_args: dict[str, Any]
    result: dict[str, Any] | None  # None while ADD is in progress or after a failed ADD

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = CACHE_KIND
        return data

    @classmethod
    def from_json(cls, data: Any) -> CacheEntry:
        if not isinstance(data, dict) or data.get("kind") != CACHE_KIND:
            raise ValueError("not a pycri CNI cache entry")
        return cls(
            container_id=str(data["container_id"]),
            network=str(data["network"]),
            ifname=str(data["ifname"]),
            netns=str(data.get("netns") or ""),
            config=dict(data["config"]),
            cni_args=[list(map(str, kv)) for kv in data.get("cni_args") or []],
            capability_args=dict(data.get("capability_args") or {}),
            result=data.get("result"),
        )


class ResultCache:
    """The cache directory; safe for concurrent use on different keys (one file per key)."""

    def __init__(self, cache_dir: str) -> None:
        self.dir = cache_dir

    def _path(self, container_id: str, network: str, ifname: str) -> str:
        return os.path.join(self.dir, f"{container_id}:{network}:{ifname}.json")

    def save(self, entry: CacheEntry) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        path = self._path(entry.container_id, entry.network, entry.ifname)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry.to_json(), f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(self.dir)

    def load(self, container_id: str, network: str, ifname: str) -> CacheEntry | None:
        return self._load_path(self._path(container_id, network, ifname))

    def _load_path(self, path: str) -> CacheEntry | None:
        try:
            with open(path) as f:
                return CacheEntry.from_json(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # a torn or foreign file cannot be used for DEL; the caller falls back to the
            # current config. Atomic writes make this rare (only a foreign/corrupt disk).
            return None

    def entries_for(self, container_id: str) -> list[CacheEntry]:
        """Every cached attachment of one container (any network, any ifname)."""
        prefix = f"{container_id}:"
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            if name.startswith(prefix) and name.endswith(".json"):
                entry = self._load_path(os.path.join(self.dir, name))
                if entry is not None and entry.container_id == container_id:
                    found.append(entry)
        return found

    def container_ids(self) -> set[str]:
        """Container ids with at least one cache file (for garbage collection)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        return {n.split(":", 1)[0] for n in names if ":" in n and n.endswith(".json")}

    def delete(self, container_id: str, network: str, ifname: str) -> None:
        try:
            os.unlink(self._path(container_id, network, ifname))
        except FileNotFoundError:
            return
        fsync_dir(self.dir)
