"""The RuntimeService servicer: one mixin per area, each in its own module.

A method no mixin provides answers UNIMPLEMENTED with its name (servicer_base).
"""
from __future__ import annotations

from cri_server.rpc_containers import ContainerRpcs
from cri_server.rpc_events import EventRpcs
from cri_server.rpc_resources import ResourceRpcs
from cri_server.rpc_runtime_info import RuntimeInfoRpcs
from cri_server.rpc_sandboxes import SandboxRpcs
from cri_server.rpc_stats import StatsRpcs
from cri_server.servicer_base import fill_unimplemented
from cri_server.services import Services
from proto import api_pb2_grpc

_MIXINS: tuple[type, ...] = (RuntimeInfoRpcs, SandboxRpcs, ContainerRpcs, EventRpcs, StatsRpcs,
                             ResourceRpcs)


def build_servicer(svc: Services) -> api_pb2_grpc.RuntimeServiceServicer:
    cls = type("RuntimeServiceServicer", (*_MIXINS, api_pb2_grpc.RuntimeServiceServicer), {})
    fill_unimplemented(cls, "RuntimeService", api_pb2_grpc.RuntimeServiceServicer)
    servicer = cls()
    servicer.svc = svc
    return servicer
