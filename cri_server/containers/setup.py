"""Wiring of the container part: ContainerManager and the streaming server.

Called from cri_server.wiring (build / recover / shutdown), after the sandboxes
part (it shares the metadata store and needs svc.sandboxes).
"""
from __future__ import annotations

import logging

from cri_server.containers import events
from cri_server.containers.manager import ContainerManager
from cri_server.containers.streaming_backend import ContainerStreamingBackend
from cri_server.services import Services
from cri_server.store import Store

log = logging.getLogger(__name__)


def _store(svc: Services) -> Store:
    store = getattr(svc, "store", None)
    if store is None:
        store = Store(svc.paths.runtime_db)
        svc.store = store  # type: ignore[attr-defined]
    return store


class _LazyImages:
    """svc.images may be wired after the containers part: look it up on each use."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        images = self._svc.images
        if images is None:
            from pycri_common.errors import Unavailable
            raise Unavailable("the image service is not available in this daemon")
        return getattr(images, name)


def build(svc: Services) -> None:
    sink = (events.make_sink(svc.events, svc.sandboxes, containers=lambda: svc.containers)
            if svc.events is not None else None)
    svc.containers = ContainerManager(_store(svc), svc.paths, svc.sandboxes, _LazyImages(svc),
                                      event_sink=sink)
    from cri_server.streaming.server import StreamingServer
    svc.streaming = StreamingServer(svc.config.streaming.address,
                                    ContainerStreamingBackend(svc.containers, svc.sandboxes),
                                    token_ttl=svc.config.streaming.token_ttl_seconds)


def recover(svc: Services) -> None:
    if svc.containers is not None:
        svc.containers.recover()
        svc.containers.start_monitor()
    if svc.streaming is not None:
        svc.streaming.start()
        log.info("streaming server on %s", svc.streaming.base_url)


def shutdown(svc: Services) -> None:
    if svc.streaming is not None:
        svc.streaming.stop()
    if svc.containers is not None:
        svc.containers.close()
