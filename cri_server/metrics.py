"""The daemon's own Prometheus metrics (off unless metrics.address is set).

Per-RPC counts, errors and latency come from the RPC interceptor; pods and
containers by state are read from the managers at scrape time; image pulls
and bytes are reported by the image service through `observe_pull`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cri_server.config import parse_host_port

if TYPE_CHECKING:
    from cri_server.containers.manager import ContainerManager
    from cri_server.sandboxes.manager import SandboxManager

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# name -> function returning {state: count}
StateSource = Callable[[], dict[str, int]]


POD_STATES = ("creating", "ready", "notready")
CONTAINER_STATES = ("created", "running", "exited", "unknown")


def count_states(records: Iterable[Any], known: Iterable[str] = ()) -> dict[str, int]:
    """{state: number of records} (known states present even when 0); records have .state."""
    counts: dict[str, int] = dict.fromkeys(known, 0)
    for rec in records:
        counts[rec.state] = counts.get(rec.state, 0) + 1
    return counts


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.sources: dict[str, StateSource] = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, source in self.sources.items():
            family = GaugeMetricFamily(f"pycri_{name}", f"Number of {name} by state",
                                       labels=["state"])
            try:
                counts = source()
            except Exception:  # a scrape must not fail because one manager is busy
                log.exception("metrics source %s failed", name)
                continue
            for state, count in sorted(counts.items()):
                family.add_metric([state], count)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_total = Counter("pycri_rpc_requests", "CRI RPCs served, by method and status code",
                                 ["method", "code"], registry=self.registry)
        self.rpc_errors = Counter("pycri_rpc_errors", "CRI RPCs that failed, by method and code",
                                  ["method", "code"], registry=self.registry)
        self.rpc_seconds = Histogram("pycri_rpc_duration_seconds", "CRI RPC latency by method",
                                     ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.pulls = Counter("pycri_image_pulls", "Image pulls, by result", ["result"],
                             registry=self.registry)
        self.pull_bytes = Counter("pycri_image_pull_bytes", "Bytes downloaded from registries",
                                  registry=self.registry)
        self._states = _StateCollector()
        self.registry.register(self._states)
        self._server: Any = None

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpc_total.labels(method, code).inc()
        if code != "OK":
            self.rpc_errors.labels(method, code).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def observe_pull(self, ok: bool, downloaded_bytes: int) -> None:
        self.pulls.labels("success" if ok else "failure").inc()
        if downloaded_bytes:
            self.pull_bytes.inc(downloaded_bytes)

    def add_state_source(self, name: str, source: StateSource) -> None:
        self._states.sources[name] = source

    def watch_managers(self, sandboxes: SandboxManager, containers: ContainerManager) -> None:
        """pycri_pods{state} and pycri_containers{state}, counted at scrape time."""
        self.add_state_source("pods", lambda: count_states(sandboxes.list(), POD_STATES))
        self.add_state_source("containers", lambda: count_states(containers.records(),
                                                                CONTAINER_STATES))

    def serve(self, address: str) -> int:
        """Starts the HTTP endpoint; returns the bound port."""
        host, port = parse_host_port(address, "metrics.address")
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
