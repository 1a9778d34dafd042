"""Builds the daemon's parts from the configuration, recovers state, shuts down.

The only module that knows how the parts fit together; servicers reach them
through the Services object. The parts are built in the order they need each other:

  store, images, CNI, zygote, events -> sandboxes -> containers -> streaming, stats, metrics

Two edges point back, set once both ends exist: a pod stops and removes its containers
(SandboxManager.containers), and an image in use by a container is not removed
(ImageManager.is_image_in_use).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any

from cni import CniManager
from cri_server import systemd_units
from cri_server.cdi.registry import Registry
from cri_server.config import Config
from cri_server.containers.events import make_pod_sink, make_sink
from cri_server.containers.manager import ContainerManager
from cri_server.containers.streaming_backend import ContainerStreamingBackend
from cri_server.events import EventBus
from cri_server.image_service import ImageServiceServicer
from cri_server.list_budget import ListBudget
from cri_server.metrics import Metrics
from cri_server.nri.service import NriService, NriSettings, RuntimeState
from cri_server.paths import Paths
from cri_server.sandboxes.manager import SandboxManager
from cri_server.sandboxes.zygote_link import ZygoteLink
from cri_server.services import Services
from cri_server.stats.service import StatsService
from cri_server.store import Store
from cri_server.streaming.server import StreamingServer
from imageservice.manager import ImageManager
from proto import api_pb2_grpc
from pycri_common.errors import PycriError
from runtime import apparmor

log = logging.getLogger(__name__)


def load_apparmor_default() -> None:
    """Where the kernel has AppArmor, pycri's default profile is loaded at start-up (a failure
    is logged: RuntimeDefault containers then fail with the reason, as in containerd)."""
    try:
        if apparmor.ensure_default_profile():
            log.info("AppArmor: default profile %s loaded", apparmor.DEFAULT_PROFILE)
    except PycriError as exc:
        log.warning("AppArmor: %s", exc)


def check_systemd_driver(driver: str) -> None:
    """cgroup_driver = "systemd" where systemd is not there: said once at start-up; each
    RunPodSandbox then fails with FAILED_PRECONDITION (as in containerd)."""
    if driver != "systemd":
        return
    try:
        systemd_units.check_available()
        log.info("cgroup driver systemd: connected to systemd")
    except PycriError as exc:
        log.warning("%s (RunPodSandbox fails until then)", exc)


def build_services(config: Config, paths: Paths) -> Services:
    """Every part, built in order; if one fails, those already started are stopped."""
    load_apparmor_default()
    check_systemd_driver(config.cgroup_driver)
    with contextlib.ExitStack() as undo:
        store = Store(paths.runtime_db)
        images = ImageManager(root_dir=paths.images_dir,
                              registry_config=dataclasses.asdict(config.registry),
                              discard_unpacked_layers=config.images.discard_unpacked_layers,
                              runtime_handlers=lambda: ["", *config.runtime.handlers])
        undo.callback(images.close)
        cni = CniManager(conf_dir=config.cni.conf_dir, bin_dirs=config.cni.bin_dirs,
                         cache_dir=str(paths.cni_cache_dir),
                         default_subnet=config.cni.default_subnet,
                         plugin_timeout=config.cni.plugin_timeout_seconds,
                         default_bridge=config.cni.default_bridge,
                         setup_loopback=False)  # the daemon brings lo up (sandboxes/netns.py)
        zygote = ZygoteLink(str(paths.state), python=config.runtime.shim_python)
        zygote.start()
        undo.callback(zygote.stop)
        events = EventBus()
        undo.callback(events.close)
        sandboxes = SandboxManager(config, paths, store, cni, zygote.spawn,
                                   adopt_shim=zygote.adopt)
        containers = ContainerManager(store, paths, sandboxes, images,
                                      shim_watch=sandboxes.shim_watch)
        cdi = Registry(config.cdi.spec_dirs, enabled=config.cdi.enable)
        containers.cdi = cdi
        sandboxes.containers = containers
        images.is_image_in_use = containers.is_image_in_use
        containers.event_sink = make_sink(events, sandboxes, containers)
        sandboxes.event_sink = make_pod_sink(events, containers)
        streaming = StreamingServer(config.streaming.address,
                                    ContainerStreamingBackend(containers, sandboxes),
                                    token_ttl=config.streaming.token_ttl_seconds)
        stats = StatsService(containers, sandboxes, str(paths.containers_dir))
        list_budget = ListBudget(lambda: sandboxes.list_bytes() + containers.list_bytes())
        sandboxes.list_budget = containers.list_budget = list_budget
        metrics = None
        if config.metrics.address:
            metrics = Metrics()
            metrics.watch_managers(sandboxes, containers)
        nri = None
        if config.nri.enable:
            c = config.nri
            nri = NriService(NriSettings(
                socket_path=c.socket_path, plugin_path=c.plugin_path,
                plugin_config_path=c.plugin_config_path,
                registration_timeout=c.plugin_registration_timeout,
                request_timeout=c.plugin_request_timeout,
                disable_connections=c.disable_connections))
            sandboxes.nri = containers.nri = nri
        svc = Services(config=config, paths=paths, store=store, images=images, cni=cni,
                       zygote=zygote, events=events, sandboxes=sandboxes, containers=containers,
                       streaming=streaming, stats=stats, metrics=metrics, cdi=cdi, nri=nri)
        undo.pop_all()
    return svc


def start_endpoints(svc: Services) -> None:
    """Starts the daemon's own network endpoints once the gRPC server is up."""
    if svc.metrics is not None:
        svc.metrics.serve(svc.config.metrics.address)


def build_image_servicer(svc: Services) -> api_pb2_grpc.ImageServiceServicer:
    return ImageServiceServicer(svc.images, svc.metrics)


def recover(svc: Services) -> None:
    """Rebuilds the in-memory view from disk and live shims after a (re)start."""
    svc.containers.recover()  # first: pod recovery may remove containers
    svc.containers.start_monitor()
    svc.streaming.start()
    log.info("streaming server on %s", svc.streaming.base_url)
    svc.sandboxes.recover()
    if svc.nri is not None:  # after recovery: plugins synchronize with what is there
        from cri_server.sandboxes.record import READY

        sandboxes, containers = svc.sandboxes, svc.containers

        def update(container_id: str, resources: dict[str, Any]) -> None:
            containers.update_resources(container_id, resources, nri_hooks=False)

        def evict(container_id: str, reason: str) -> None:  # as containerd: stop it
            containers.stop(container_id, 0)

        registry = containers.cdi
        svc.nri.start(RuntimeState(
            pods=lambda: [p for p in sandboxes.list() if p.state == READY],
            containers=containers.list, pod=sandboxes.get, update=update, evict=evict,
            cdi=registry.resolve if registry is not None else None))


def shutdown(svc: Services) -> None:
    """Stops the daemon's own helpers; pods and containers keep running."""
    if svc.nri is not None:
        svc.nri.stop()
    svc.streaming.stop()
    svc.containers.close()
    svc.sandboxes.close()
    svc.zygote.stop()
    svc.images.close()
    svc.events.close()
    if svc.metrics is not None:
        svc.metrics.stop()
