"""Builds the daemon's parts from the configuration, recovers state, shuts down.

The only module that knows how the parts fit together; servicers reach them
through the Services object.
"""
from __future__ import annotations

import dataclasses
import logging

from cri_server.config import Config
from cri_server.containers import setup as containers_setup
from cri_server.containers.events import make_pod_sink
from cri_server.events import EventBus
from cri_server.image_service import ImageServiceServicer
from cri_server.list_budget import ListBudget
from cri_server.metrics import Metrics
from cri_server.paths import Paths
from cri_server.sandboxes import setup as sandboxes_setup
from cri_server.services import Services
from cri_server.stats.service import StatsService
from cri_server.store import Store
from imageservice.manager import ImageManager
from proto import api_pb2_grpc

log = logging.getLogger(__name__)


def build_services(config: Config, paths: Paths) -> Services:
    svc = Services(config=config, paths=paths)
    svc.store = Store(paths.runtime_db)
    svc.images = ImageManager(
        root_dir=paths.images_dir,
        registry_config=dataclasses.asdict(config.registry),
        is_image_in_use=lambda image_id: (svc.containers is not None
                                          and svc.containers.is_image_in_use(image_id)),
        runtime_handlers=lambda: ["", *config.runtime.handlers])
    sandboxes_setup.build(svc)
    svc.events = EventBus()
    svc.sandboxes.event_sink = make_pod_sink(svc.events, lambda: svc.containers)
    containers_setup.build(svc)
    svc.list_budget = ListBudget(lambda: svc.sandboxes.list_bytes() + svc.containers.list_bytes())
    svc.sandboxes.list_budget = svc.containers.list_budget = svc.list_budget
    svc.stats = StatsService(svc.containers, svc.sandboxes, str(paths.containers_dir))
    if config.metrics.address:
        svc.metrics = Metrics()
        svc.metrics.watch_managers(svc.sandboxes, svc.containers)
    return svc


def start_endpoints(svc: Services) -> None:
    """Starts the daemon's own network endpoints once the gRPC server is up."""
    if svc.metrics is not None:
        svc.metrics.serve(svc.config.metrics.address)


def build_image_servicer(svc: Services) -> api_pb2_grpc.ImageServiceServicer:
    return ImageServiceServicer(svc.images, svc.metrics)


def recover(svc: Services) -> None:
    """Rebuilds the in-memory view from disk and live shims after a (re)start."""
    containers_setup.recover(svc)  # first: pod recovery may remove containers
    sandboxes_setup.recover(svc)


def shutdown(svc: Services) -> None:
    """Stops the daemon's own helpers; pods and containers keep running."""
    containers_setup.shutdown(svc)
    sandboxes_setup.shutdown(svc)
    if svc.images is not None:
        svc.images.close()
    if svc.events is not None:
        svc.events.close()
    if svc.metrics is not None:
        svc.metrics.stop()
