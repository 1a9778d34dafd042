"""UpdateContainerResources and UpdatePodSandboxResources (the work is in the managers)."""
from __future__ import annotations

import grpc

from cri_server import resources
from cri_server.services import Services
from proto import api_pb2
from pycri_common.errors import InvalidArgument


class ResourceRpcs:
    svc: Services

    def UpdateContainerResources(self, request: api_pb2.UpdateContainerResourcesRequest,
                                 context: grpc.ServicerContext
                                 ) -> api_pb2.UpdateContainerResourcesResponse:
        if not request.container_id:
            raise InvalidArgument("container id is empty")
        if not request.HasField("linux"):
            if request.HasField("windows"):
                raise InvalidArgument("windows resources cannot be applied to a Linux container")
            self.svc.containers.get(request.container_id)  # NOT_FOUND for an unknown id
            return api_pb2.UpdateContainerResourcesResponse()
        update = resources.to_dict(request.linux)  # validates
        self.svc.containers.update_resources(request.container_id, update)
        return api_pb2.UpdateContainerResourcesResponse()

    def UpdatePodSandboxResources(self, request: api_pb2.UpdatePodSandboxResourcesRequest,
                                  context: grpc.ServicerContext
                                  ) -> api_pb2.UpdatePodSandboxResourcesResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod sandbox id is empty")
        for name, res in (("resources", request.resources), ("overhead", request.overhead)):
            if request.HasField(name):
                resources.check(name, res)
        linux = api_pb2.LinuxPodSandboxConfig()
        if request.HasField("resources"):
            linux.resources.CopyFrom(request.resources)
        if request.HasField("overhead"):
            linux.overhead.CopyFrom(request.overhead)
        self.svc.sandboxes.update_resources(request.pod_sandbox_id, linux)
        return api_pb2.UpdatePodSandboxResourcesResponse()

