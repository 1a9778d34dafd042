"""Makes every RPC that no mixin implements answer UNIMPLEMENTED, naming the RPC.

kubelet falls back to cAdvisor for stats only on that exact code, so an RPC
must never pretend to succeed. The generated servicer's own placeholders say
"Method not implemented!"; ours say which RPC.
"""
from __future__ import annotations

from typing import Any

from proto import api_pb2
from pycri_common.errors import Unimplemented


def _unimplemented(name: str) -> Any:
    def rpc(self: Any, request: Any, context: Any) -> Any:
        raise Unimplemented(f"{name} is not implemented by pycri")
    rpc.__name__ = name
    return rpc


def fill_unimplemented(cls: type, service_name: str, generated_base: type) -> type:
    """Replaces each method still inherited from generated_base with an UNIMPLEMENTED one."""
    service = api_pb2.DESCRIPTOR.services_by_name[service_name]
    for method in service.methods:
        if getattr(cls, method.name) is getattr(generated_base, method.name):
            setattr(cls, method.name, _unimplemented(method.name))
    return cls


def rpc_names(service_name: str) -> list[str]:
    return [m.name for m in api_pb2.DESCRIPTOR.services_by_name[service_name].methods]
