"""Builds the daemon's parts from the configuration, recovers state, shuts down.

The only module that knows how the parts fit together; servicers reach them
through the Services object.
"""
from __future__ import annotations

import logging

from proto import api_pb2_grpc
from cri_server.config import Config
from cri_server.events import EventBus
from cri_server.metrics import Metrics
from cri_server.paths import Paths
from cri_server.servicer_base import fill_unimplemented
from cri_server.services import Services

log = logging.getLogger("pycri")


def build_services(config: Config, paths: Paths) -> Services:
    svc = Services(config=config, paths=paths)
    svc.events = EventBus()
    if config.metrics.address:
        svc.metrics = Metrics()
    return svc


def start_endpoints(svc: Services) -> None:
    """Starts the daemon's own network endpoints once the gRPC server is up."""
    if svc.metrics is not None:
        svc.metrics.serve(svc.config.metrics.address)


def build_image_servicer(svc: Services) -> api_pb2_grpc.ImageServiceServicer:
    cls = type("ImageServiceServicer", (api_pb2_grpc.ImageServiceServicer,), {})
    fill_unimplemented(cls, "ImageService", api_pb2_grpc.ImageServiceServicer)
    return cls()


def recover(svc: Services) -> None:
    """Rebuilds the in-memory view from disk and live shims after a (re)start."""


def shutdown(svc: Services) -> None:
    """Stops the daemon's own helpers; pods and containers keep running."""
    if svc.events is not None:
        svc.events.close()
    if svc.metrics is not None:
        svc.metrics.stop()
