"""Wiring of the pod sandbox part: CNI manager, zygote, SandboxManager.

Called from cri_server.wiring (build / recover / shutdown).
"""
from __future__ import annotations

import logging

from cni import CniManager
from cri_server.sandboxes.manager import SandboxManager
from cri_server.sandboxes.zygote_link import ZygoteLink
from cri_server.services import Services

log = logging.getLogger(__name__)


def build(svc: Services) -> None:
    cfg = svc.config
    svc.cni = CniManager(conf_dir=cfg.cni.conf_dir, bin_dirs=cfg.cni.bin_dirs,
                         cache_dir=str(svc.paths.cni_cache_dir),
                         default_subnet=cfg.cni.default_subnet,
                         plugin_timeout=cfg.cni.plugin_timeout_seconds,
                         default_bridge=cfg.cni.default_bridge,
                         setup_loopback=False)  # the daemon brings lo up (sandboxes/netns.py)
    zygote = ZygoteLink(str(svc.paths.state), python=cfg.runtime.shim_python)
    zygote.start()
    svc.zygote = zygote
    svc.sandboxes = SandboxManager(cfg, svc.paths, svc.store, svc.cni, zygote.spawn,
                                   containers=lambda: svc.containers)


def recover(svc: Services) -> None:
    if svc.sandboxes is not None:
        svc.sandboxes.recover()


def shutdown(svc: Services) -> None:
    zygote = getattr(svc, "zygote", None)
    if zygote is not None:
        zygote.stop()
