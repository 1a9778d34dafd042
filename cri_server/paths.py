"""Every path under pycri's root (persistent) and state (runtime) directories.

Nothing else in the daemon concatenates paths under these directories: ask a
`Paths` object. Domain packages (runtime, imageservice, cni) receive the
directories they need as arguments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path   # persistent: images, writable layers, pod files, metadata
    state: Path  # runtime: sockets, pinned namespaces, shims; gone on reboot

    # -- state dir ---------------------------------------------------------
    @property
    def lock_file(self) -> Path:
        return self.state / "pycri.lock"

    @property
    def zygote_socket(self) -> Path:
        return self.state / "zygote.sock"

    @property
    def shims_dir(self) -> Path:
        return self.state / "shims"

    def shim_dir(self, pod_id: str) -> Path:
        return self.shims_dir / pod_id

    @property
    def ns_root(self) -> Path:
        return self.state / "ns"

    def ns_dir(self, pod_id: str) -> Path:
        return self.ns_root / pod_id

    @property
    def netns_root(self) -> Path:
        return self.state / "netns"

    def netns_path(self, pod_id: str) -> Path:
        """The pod's network namespace, made and pinned by the daemon (handed to CNI)."""
        return self.netns_root / pod_id


    # -- root dir ----------------------------------------------------------
    @property
    def root_lock_file(self) -> Path:
        return self.root / "pycri.lock"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def runtime_db(self) -> Path:
        return self.root / "runtime.db"

    @property
    def containers_dir(self) -> Path:
        return self.root / "containers"

    def container_dir(self, container_id: str) -> Path:
        return self.containers_dir / container_id

    @property
    def cni_cache_dir(self) -> Path:
        # Persistent like host-local's IP allocations, so DEL can free them after a reboot.
        return self.root / "cni" / "results"

    @property
    def pods_dir(self) -> Path:
        return self.root / "pods"

    def pod_dir(self, pod_id: str) -> Path:
        return self.pods_dir / pod_id

    def ensure(self) -> None:
        """Creates the top-level directories with root-only permissions."""
        for d in (self.root, self.state, self.images_dir, self.containers_dir, self.pods_dir,
                  self.shims_dir, self.ns_root, self.netns_root, self.cni_cache_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o711)
