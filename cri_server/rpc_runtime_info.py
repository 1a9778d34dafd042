"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""
from __future__ import annotations

import json
import platform
from typing import Any

import grpc

from cri_server import __version__, host_features
from cri_server.config import to_toml
from cri_server.services import Services
from proto import api_pb2
from pycri_common.errors import InvalidArgument

# The CRI API version string kubelet expects in VersionResponse.version.
KUBELET_API_VERSION = "0.1.0"
RUNTIME_NAME = "pycri"
RUNTIME_API_VERSION = "v1"


class RuntimeInfoRpcs:
    svc: Services

    def Version(self, request: api_pb2.VersionRequest, context: grpc.ServicerContext
                ) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    def Status(self, request: api_pb2.StatusRequest, context: grpc.ServicerContext
               ) -> api_pb2.StatusResponse:
        ready, reason, message = self._network_status()
        conditions = [
            api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
            api_pb2.RuntimeCondition(type="NetworkReady", status=ready, reason=reason,
                                     message=message),
        ]
        userns_ok, _ = self._user_namespaces()
        handler_features = api_pb2.RuntimeHandlerFeatures(
            recursive_read_only_mounts=host_features.recursive_read_only_mounts(),
            user_namespaces=userns_ok,
        )
        handlers = [api_pb2.RuntimeHandler(name=name, features=handler_features)
                    for name in ["", *self.svc.config.runtime.handlers]]
        response = api_pb2.StatusResponse(
            status=api_pb2.RuntimeStatus(conditions=conditions),
            runtime_handlers=handlers,
            features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True,
                                             user_namespaces_host_network=False),
        )
        if request.verbose:
            response.info.update(self._verbose_info())
        return response

    def RuntimeConfig(self, request: api_pb2.RuntimeConfigRequest, context: grpc.ServicerContext
                      ) -> api_pb2.RuntimeConfigResponse:
        driver = (api_pb2.SYSTEMD if self.svc.config.cgroup_driver == "systemd"
                  else api_pb2.CGROUPFS)
        return api_pb2.RuntimeConfigResponse(
            linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=driver))

    def UpdateRuntimeConfig(self, request: api_pb2.UpdateRuntimeConfigRequest,
                            context: grpc.ServicerContext) -> api_pb2.UpdateRuntimeConfigResponse:
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            import ipaddress
            for part in cidr.split(","):
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError as exc:
                    raise InvalidArgument(f"pod_cidr {cidr!r} is not a CIDR: {exc}") from None
            with self.svc.lock:
                self.svc.pod_cidr = cidr
        return api_pb2.UpdateRuntimeConfigResponse()

    # -- helpers -------------------------------------------------------------
    def _network_status(self) -> tuple[bool, str, str]:
        ready, reason, message = self.svc.cni.status()
        return ready, reason, message

    def _user_namespaces(self) -> tuple[bool, str]:
        return host_features.user_namespaces(str(self.svc.paths.root), str(self.svc.paths.state))

    def _verbose_info(self) -> dict[str, str]:
        userns_ok, userns_reason = self._user_namespaces()
        info: dict[str, Any] = {
            "config": to_toml(self.svc.config),
            "versions": json.dumps({
                "pycri": __version__,
                "python": platform.python_version(),
                "grpcio": grpc.__version__,
                "kernel": platform.release(),
            }),
            "podCIDR": self.svc.pod_cidr,
            "cgroupVersion": host_features.cgroup_mode(),
            "apparmor": host_features.apparmor_status(),
            "userNamespaces": json.dumps({"supported": userns_ok, "reason": userns_reason}),
            "startedAt": str(int(self.svc.started_at)),
        }
        if self.svc.cdi is not None:
            info["cdi"] = self.svc.cdi.status()
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()}
