"""Container RPCs: lifecycle, status, list, logs, ExecSync, and the streaming URLs."""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from cri_server.containers import convert
from cri_server.containers.manager import ContainerManager
from cri_server.services import Services
from cri_server.streaming.server import StreamingServer
from proto import api_pb2
from pycri_common.errors import InvalidArgument

STREAM_BATCH = 500


class ContainerRpcs:
    svc: Services

    @property
    def _containers(self) -> ContainerManager:
        return self.svc.containers

    def CreateContainer(self, request: api_pb2.CreateContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.CreateContainerResponse:
        return api_pb2.CreateContainerResponse(container_id=self._containers.create(request))

    def StartContainer(self, request: api_pb2.StartContainerRequest,
                       context: grpc.ServicerContext) -> api_pb2.StartContainerResponse:
        self._containers.start(request.container_id)
        return api_pb2.StartContainerResponse()

    def StopContainer(self, request: api_pb2.StopContainerRequest,
                      context: grpc.ServicerContext) -> api_pb2.StopContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument(f"timeout must not be negative, got {request.timeout}")
        self._containers.stop(request.container_id, float(request.timeout))
        return api_pb2.StopContainerResponse()

    def RemoveContainer(self, request: api_pb2.RemoveContainerRequest,
                        context: grpc.ServicerContext) -> api_pb2.RemoveContainerResponse:
        if not request.container_id:
            raise InvalidArgument("container id is empty")
        self._containers.remove(request.container_id)
        return api_pb2.RemoveContainerResponse()

    def ListContainers(self, request: api_pb2.ListContainersRequest,
                       context: grpc.ServicerContext) -> api_pb2.ListContainersResponse:
        flt = request.filter if request.HasField("filter") else None
        return self._containers.list_response(flt)

    def StreamContainers(self, request: api_pb2.StreamContainersRequest,
                         context: grpc.ServicerContext
                         ) -> Iterator[api_pb2.StreamContainersResponse]:
        flt = request.filter if request.HasField("filter") else None
        items = self._containers.list_items(flt)
        for i in range(0, max(len(items), 1), STREAM_BATCH):
            yield api_pb2.StreamContainersResponse(containers=items[i:i + STREAM_BATCH])

    def ContainerStatus(self, request: api_pb2.ContainerStatusRequest,
                        context: grpc.ServicerContext) -> api_pb2.ContainerStatusResponse:
        rec = self._containers.status(request.container_id)
        response = api_pb2.ContainerStatusResponse(status=convert.status(rec))
        if request.verbose:
            response.info.update(convert.verbose_info(rec))
        return response

    def ReopenContainerLog(self, request: api_pb2.ReopenContainerLogRequest,
                           context: grpc.ServicerContext) -> api_pb2.ReopenContainerLogResponse:
        self._containers.reopen_log(request.container_id)
        return api_pb2.ReopenContainerLogResponse()

    def ExecSync(self, request: api_pb2.ExecSyncRequest,
                 context: grpc.ServicerContext) -> api_pb2.ExecSyncResponse:
        stdout, stderr, code = self._containers.exec_sync(
            request.container_id, list(request.cmd), float(request.timeout))
        return api_pb2.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=code)

    def _streaming(self) -> StreamingServer:
        return self.svc.streaming

    def Exec(self, request: api_pb2.ExecRequest,
             context: grpc.ServicerContext) -> api_pb2.ExecResponse:
        self._containers.exec_target(request.container_id, list(request.cmd), "Exec")
        return api_pb2.ExecResponse(url=self._streaming().get_exec_url(request))

    def Attach(self, request: api_pb2.AttachRequest,
               context: grpc.ServicerContext) -> api_pb2.AttachResponse:
        self._containers.running_container(request.container_id, "attach")
        return api_pb2.AttachResponse(url=self._streaming().get_attach_url(request))

    def PortForward(self, request: api_pb2.PortForwardRequest,
                    context: grpc.ServicerContext) -> api_pb2.PortForwardResponse:
        self._containers.pod_netns(request.pod_sandbox_id)
        return api_pb2.PortForwardResponse(url=self._streaming().get_portforward_url(request))
