"""StatsService: the domain side of the stats and metrics RPCs.

Picks the containers and pods a request is about from the managers and hands
them to the collector. ListContainerStats is polled by kubelet every second for
every container, so the list path never talks to a shim: it takes the records
as the container monitor last refreshed them (at most a second old) and reads
a handful of cgroup files per container; writable-layer sizes come from a
cache that is refreshed in the background.

Which containers are listed (like containerd, where only containers with a live
task have cgroup figures): created and running ones; exited containers are
left out of lists (their cgroup is gone or going), but ContainerStats on one
still answers with what is left.
"""
from __future__ import annotations

from typing import Any

from cri_server.stats import adapters, cadvisor
from cri_server.stats.collector import StatsCollector
from cri_server.stats.sources import ContainerSource
from proto import api_pb2
from pycri_common.errors import InvalidArgument, NotFound
from pycri_common.text import shorten


class StatsService:
    def __init__(self, containers: Any, sandboxes: Any, containers_root: str) -> None:
        self.containers = containers
        self.sandboxes = sandboxes
        self.collector = StatsCollector(containers_root)

    # -- containers ------------------------------------------------------------
    def container_stats(self, container_id: str) -> api_pb2.ContainerStats:
        if not container_id:
            raise InvalidArgument("container id is empty")
        rec = self.containers.status(container_id)  # NotFound for an unknown id
        return self.collector.container_stats(adapters.container_source(rec))

    def _live_containers(self) -> list[Any]:
        return [r for r in self.containers.records() if r.state in adapters.LIVE_STATES]

    def list_container_stats(self, flt: api_pb2.ContainerStatsFilter | None
                             ) -> api_pb2.ListContainerStatsResponse:
        recs = self._live_containers()
        if flt is not None:
            recs = [r for r in recs
                    if r.id.startswith(flt.id) and r.pod_id.startswith(flt.pod_sandbox_id)
                    and adapters.labels_match(r.labels, flt.label_selector)]
        recs.sort(key=lambda r: r.created_at)
        out = api_pb2.ListContainerStatsResponse()
        for r in recs:   # each item filled in the answer itself (copying 250 of them costs)
            self.collector.fill_container(out.stats.add(), adapters.container_source(r))
        return out

    # -- pods --------------------------------------------------------------------
    def _containers_by_pod(self) -> dict[str, list[ContainerSource]]:
        out: dict[str, list[ContainerSource]] = {}
        for rec in sorted(self._live_containers(), key=lambda r: r.created_at):
            out.setdefault(rec.pod_id, []).append(adapters.container_source(rec))
        return out

    def pod_stats(self, pod_id: str) -> api_pb2.PodSandboxStats:
        if not pod_id:
            raise InvalidArgument("pod sandbox id is empty")
        rec = self.sandboxes.get(pod_id)  # NotFound for an unknown id
        if rec.state == "creating":
            raise NotFound(f"pod sandbox {shorten(pod_id)} is still being created")
        containers = self._containers_by_pod().get(rec.id, [])
        return self.collector.pod_stats(adapters.pod_source(rec, containers))

    def _ready_pods(self, flt: api_pb2.PodSandboxStatsFilter | None) -> list[Any]:
        """Like containerd: only ready pods have figures to report."""
        pods = [p for p in self.sandboxes.list() if p.state == "ready"]
        if flt is not None:
            pods = [p for p in pods if p.id.startswith(flt.id)
                    and adapters.labels_match(dict(p.config.labels), flt.label_selector)]
        return sorted(pods, key=lambda p: p.created_at)

    def list_pod_stats(self, flt: api_pb2.PodSandboxStatsFilter | None
                       ) -> api_pb2.ListPodSandboxStatsResponse:
        pods = self._ready_pods(flt)
        by_pod = self._containers_by_pod()
        out = api_pb2.ListPodSandboxStatsResponse()
        # An unfiltered List (kubelet's) keeps each pod's net/dev file open until the pod is
        # no longer listed; a filtered one opens and closes it (it cannot tell who left).
        keep = flt is None
        listed = []
        for p in pods:
            src = adapters.pod_source(p, by_pod.get(p.id, []))
            self.collector.fill_pod(out.stats.add(), src, keep_net=keep)
            listed.append(self.collector.net_key(src))
        if keep:
            self.collector.forget_net_except(listed)
        return out

    # -- cAdvisor-style metrics ----------------------------------------------------
    @staticmethod
    def metric_descriptors() -> list[api_pb2.MetricDescriptor]:
        return cadvisor.descriptors()

    def pod_metrics(self) -> list[api_pb2.PodSandboxMetrics]:
        by_pod = self._containers_by_pod()
        return [cadvisor.pod_metrics(adapters.pod_source(p, by_pod.get(p.id, [])),
                                     self.collector.disk)
                for p in self._ready_pods(None)]
