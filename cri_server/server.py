"""The pycri daemon: locks, gRPC server on the unix socket, recovery, shutdown."""
from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from cri_server import host_features, sdnotify, wiring
from cri_server.config import Config
from cri_server.interceptor import RpcInterceptor
from cri_server.locking import LockFile
from cri_server.paths import Paths
from cri_server.runtime_service import build_servicer
from cri_server.services import Services
from proto import api_pb2, api_pb2_grpc

log = logging.getLogger(__name__)

# Enough workers for long-lived streams (events, logs) plus kubelet's bursts.
MAX_WORKERS = 64
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.paths = Paths(root=Path(config.root), state=Path(config.state))
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.socket_path = Path(config.socket)
        self._locks = [
            LockFile(Path(str(self.socket_path) + ".lock"), f"socket {self.socket_path}"),
            LockFile(self.paths.lock_file, f"state dir {self.paths.state}"),
            LockFile(self.paths.root_lock_file, f"root dir {self.paths.root}"),
        ]
        self.services: Services | None = None
        self._server: grpc.Server | None = None

    def run(self) -> None:
        """Serves until SIGTERM/SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.start()
        try:
            self.stopping.wait()
        finally:
            self.stop()

    def start(self) -> None:
        for lock in self._locks:
            lock.acquire()
        try:
            self.paths.ensure()
            self.services = wiring.build_services(self.config, self.paths)
            self._server = self._build_server(self.services)
            self._bind_socket(self._server)
            self._server.start()
            log.info("pycri listening on %s", self.socket_path)
            wiring.start_endpoints(self.services)
            wiring.recover(self.services)
            threading.Thread(target=host_features.user_namespaces,
                             args=(str(self.paths.root), str(self.paths.state)),
                             name="userns-probe", daemon=True).start()
        except BaseException:
            self.stop()  # stop what was started (zygote, streaming, metrics), release locks
            raise
        self.ready.set()
        sdnotify.notify("READY=1")
        log.info("pycri ready (root %s, state %s)", self.paths.root, self.paths.state)

    def stop(self) -> None:
        log.info("pycri shutting down")
        sdnotify.notify("STOPPING=1")
        if self._server is not None:
            self._server.stop(grace=2).wait(5)
        if self.services is not None:
            wiring.shutdown(self.services)
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        for lock in reversed(self._locks):
            lock.release()

    def _build_server(self, svc: Services) -> grpc.Server:
        interceptor = RpcInterceptor(self.ready)
        if svc.metrics is not None:
            interceptor.observers.append(svc.metrics.observe_rpc)
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="rpc"),
            interceptors=[interceptor],
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=None,
        )
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(build_servicer(svc), server)
        api_pb2_grpc.add_ImageServiceServicer_to_server(wiring.build_image_servicer(svc), server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection([
            api_pb2.DESCRIPTOR.services_by_name["RuntimeService"].full_name,
            api_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name,
            reflection.SERVICE_NAME,
        ], server)
        return server

    def _bind_socket(self, server: grpc.Server) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.socket_path.unlink()  # stale: we hold the socket lock
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o117)  # the socket is created 0660
        try:
            server.add_insecure_port(f"unix://{self.socket_path}")
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o660)
