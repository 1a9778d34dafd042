"""Wiring of the pod sandbox part: CNI manager, zygote, store, SandboxManager.

Called from cri_server.wiring (build / recover / shutdown).
"""
from __future__ import annotations

import logging

from cni import CniManager
from cri_server.sandboxes.manager import SandboxManager
from cri_server.sandboxes.zygote_link import ZygoteLink
from cri_server.services import Services
from cri_server.store import Store

log = logging.getLogger("pycri.sandboxes")


def shared_store(svc: Services) -> Store:
    """The one metadata store (root/runtime.db) shared by sandboxes and containers."""
    store = getattr(svc, "store", None)
    if store is None:
        store = Store(svc.paths.runtime_db)
        svc.store = store  # type: ignore[attr-defined]
    return store


def build(svc: Services) -> None:
    cfg = svc.config
    svc.cni = CniManager(conf_dir=cfg.cni.conf_dir, bin_dirs=cfg.cni.bin_dirs,
                         cache_dir=str(svc.paths.cni_cache_dir),
                         default_subnet=cfg.cni.default_subnet,
                         plugin_timeout=cfg.cni.plugin_timeout_seconds,
                         default_bridge=cfg.cni.default_bridge,
                         setup_loopback=False)  # the daemon brings lo up (sandboxes/netns.py)
    zygote = ZygoteLink(str(svc.paths.state))
    zygote.start()
    svc.zygote = zygote  # type: ignore[attr-defined]
    svc.sandboxes = SandboxManager(cfg, svc.paths, shared_store(svc), svc.cni, zygote.spawn,
                                   containers=lambda: svc.containers)


def recover(svc: Services) -> None:
    if svc.sandboxes is not None:
        svc.sandboxes.recover()


def shutdown(svc: Services) -> None:
    zygote = getattr(svc, "zygote", None)
    if zygote is not None:
        zygote.stop()
