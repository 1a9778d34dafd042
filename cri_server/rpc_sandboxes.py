"""RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox,
StreamPodSandboxes."""
from __future__ import annotations

import time
from collections.abc import Iterator

import grpc

from cri_server.containers import convert
from cri_server.sandboxes import SandboxManager, views
from cri_server.services import Services
from proto import api_pb2

STREAM_CHUNK = 100


class SandboxRpcs:
    svc: Services

    def _sandboxes(self) -> SandboxManager:
        return self.svc.sandboxes

    def RunPodSandbox(self, request: api_pb2.RunPodSandboxRequest, context: grpc.ServicerContext
                      ) -> api_pb2.RunPodSandboxResponse:
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=self._sandboxes().run(request))

    def StopPodSandbox(self, request: api_pb2.StopPodSandboxRequest,
                       context: grpc.ServicerContext) -> api_pb2.StopPodSandboxResponse:
        self._sandboxes().stop(request.pod_sandbox_id)
        return api_pb2.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: api_pb2.RemovePodSandboxRequest,
                         context: grpc.ServicerContext) -> api_pb2.RemovePodSandboxResponse:
        self._sandboxes().remove(request.pod_sandbox_id)
        return api_pb2.RemovePodSandboxResponse()

    def PodSandboxStatus(self, request: api_pb2.PodSandboxStatusRequest,
                         context: grpc.ServicerContext) -> api_pb2.PodSandboxStatusResponse:
        sandboxes = self._sandboxes()
        rec = sandboxes.get(request.pod_sandbox_id)
        response = api_pb2.PodSandboxStatusResponse(status=views.pod_sandbox_status(rec),
                                                    timestamp=time.time_ns())
        if request.verbose:
            response.info.update(views.verbose_info(rec, sandboxes.cni_result(rec)))
        # kubelet's evented PLEG reads them from here
        response.containers_statuses.extend(
            convert.status(c) for c in sorted(self.svc.containers.in_pod(rec.id),
                                              key=lambda c: c.created_at))
        return response

    def ListPodSandbox(self, request: api_pb2.ListPodSandboxRequest,
                       context: grpc.ServicerContext) -> api_pb2.ListPodSandboxResponse:
        flt = request.filter if request.HasField("filter") else None
        return self._sandboxes().list_response(flt)

    def StreamPodSandboxes(self, request: api_pb2.StreamPodSandboxesRequest,
                           context: grpc.ServicerContext
                           ) -> Iterator[api_pb2.StreamPodSandboxesResponse]:
        flt = request.filter if request.HasField("filter") else None
        chunk: list[api_pb2.PodSandbox] = []
        for item in self._sandboxes().list_items(flt):
            chunk.append(item)
            if len(chunk) >= STREAM_CHUNK:
                yield api_pb2.StreamPodSandboxesResponse(pod_sandboxes=chunk)
                chunk = []
        if chunk:
            yield api_pb2.StreamPodSandboxesResponse(pod_sandboxes=chunk)
