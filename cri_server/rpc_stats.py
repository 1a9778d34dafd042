"""Stats and metrics RPCs: container and pod stats (one, list, stream) and cAdvisor metrics.

The Stream* variants answer the same lists split over several messages.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from cri_server.services import Services
from cri_server.stats.service import StatsService
from proto import api_pb2

STREAM_BATCH = 100


def _batches(items: list[Any]) -> Iterator[list[Any]]:
    """items in slices of STREAM_BATCH; one empty slice when there are none."""
    for i in range(0, max(len(items), 1), STREAM_BATCH):
        yield items[i:i + STREAM_BATCH]


class StatsRpcs:
    svc: Services

    @property
    def _stats(self) -> StatsService:
        return self.svc.stats

    # -- containers ------------------------------------------------------------
    def ContainerStats(self, request: api_pb2.ContainerStatsRequest,
                       context: grpc.ServicerContext) -> api_pb2.ContainerStatsResponse:
        return api_pb2.ContainerStatsResponse(
            stats=self._stats.container_stats(request.container_id))

    def ListContainerStats(self, request: api_pb2.ListContainerStatsRequest,
                           context: grpc.ServicerContext) -> api_pb2.ListContainerStatsResponse:
        flt = request.filter if request.HasField("filter") else None
        return self._stats.list_container_stats(flt)

    def StreamContainerStats(self, request: api_pb2.StreamContainerStatsRequest,
                             context: grpc.ServicerContext
                             ) -> Iterator[api_pb2.StreamContainerStatsResponse]:
        flt = request.filter if request.HasField("filter") else None
        for batch in _batches(list(self._stats.list_container_stats(flt).stats)):
            yield api_pb2.StreamContainerStatsResponse(container_stats=batch)

    # -- pods --------------------------------------------------------------------
    def PodSandboxStats(self, request: api_pb2.PodSandboxStatsRequest,
                        context: grpc.ServicerContext) -> api_pb2.PodSandboxStatsResponse:
        return api_pb2.PodSandboxStatsResponse(
            stats=self._stats.pod_stats(request.pod_sandbox_id))

    def ListPodSandboxStats(self, request: api_pb2.ListPodSandboxStatsRequest,
                            context: grpc.ServicerContext
                            ) -> api_pb2.ListPodSandboxStatsResponse:
        flt = request.filter if request.HasField("filter") else None
        return self._stats.list_pod_stats(flt)

    def StreamPodSandboxStats(self, request: api_pb2.StreamPodSandboxStatsRequest,
                              context: grpc.ServicerContext
                              ) -> Iterator[api_pb2.StreamPodSandboxStatsResponse]:
        flt = request.filter if request.HasField("filter") else None
        for batch in _batches(list(self._stats.list_pod_stats(flt).stats)):
            yield api_pb2.StreamPodSandboxStatsResponse(pod_sandbox_stats=batch)

    # -- cAdvisor-style metrics ----------------------------------------------------
    def ListMetricDescriptors(self, request: api_pb2.ListMetricDescriptorsRequest,
                              context: grpc.ServicerContext
                              ) -> api_pb2.ListMetricDescriptorsResponse:
        return api_pb2.ListMetricDescriptorsResponse(
            descriptors=StatsService.metric_descriptors())

    def ListPodSandboxMetrics(self, request: api_pb2.ListPodSandboxMetricsRequest,
                              context: grpc.ServicerContext
                              ) -> api_pb2.ListPodSandboxMetricsResponse:
        return api_pb2.ListPodSandboxMetricsResponse(pod_metrics=self._stats.pod_metrics())

    def StreamPodSandboxMetrics(self, request: api_pb2.StreamPodSandboxMetricsRequest,
                                context: grpc.ServicerContext
                                ) -> Iterator[api_pb2.StreamPodSandboxMetricsResponse]:
        for batch in _batches(self._stats.pod_metrics()):
            yield api_pb2.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=batch)
