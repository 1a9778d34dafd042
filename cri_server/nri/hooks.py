"""What the pod and container managers tell NRI, and when (a Protocol; no-op without NRI).

Every call happens at one lifecycle point of the CRI path:

- ``run_pod_sandbox``: the pod is built but not READY (not listed) yet; an error fails
  RunPodSandbox, which then undoes the pod.
- ``stop_pod_sandbox``: the pod's containers are stopped, its network not yet torn down.
- ``remove_pod_sandbox``: the pod is gone.
- ``update_pod_sandbox``: UpdatePodSandboxResources, before the pod cgroup changes (an
  error fails it); ``post_update_pod_sandbox`` after.
- ``create_container``: the spec is built, nothing runs yet and the container is not listed;
  returns the spec with the plugins' adjustments applied; an error fails CreateContainer.
- ``post_create_container``, ``start_container`` (before the process is released; an error
  fails StartContainer), ``post_start_container``, ``stop_container`` (once per container,
  when it is first seen stopped), ``remove_container``.
- ``update_container``: before UpdateContainerResources writes the cgroup; returns the
  resources to write (plugins may change them); ``post_update_container`` after.

Notifications after the fact (post-*, stop, remove) never fail the CRI call: a plugin's
error there is logged.
"""
from __future__ import annotations

from typing import Any, Protocol

from cri_server.containers.record import ContainerRecord
from cri_server.sandboxes.record import SandboxRecord
from proto import api_pb2
from runtime.container_spec import ContainerSpec


class NriHooks(Protocol):
    def run_pod_sandbox(self, pod: SandboxRecord) -> None: ...

    def stop_pod_sandbox(self, pod: SandboxRecord) -> None: ...

    def remove_pod_sandbox(self, pod: SandboxRecord) -> None: ...

    def update_pod_sandbox(self, pod: SandboxRecord,
                           linux: api_pb2.LinuxPodSandboxConfig) -> None: ...

    def post_update_pod_sandbox(self, pod: SandboxRecord) -> None: ...

    def create_container(self, pod: SandboxRecord, ctr: ContainerRecord,
                         spec: ContainerSpec) -> ContainerSpec: ...

    def post_create_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None: ...

    def start_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None: ...

    def post_start_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None: ...

    def stop_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None: ...

    def remove_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None: ...

    def update_container(self, pod: SandboxRecord, ctr: ContainerRecord,
                         resources: dict[str, Any]) -> dict[str, Any]: ...

    def post_update_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None: ...


class NoNri:
    """NRI disabled: every hook does nothing."""

    def run_pod_sandbox(self, pod: SandboxRecord) -> None:
        pass

    def stop_pod_sandbox(self, pod: SandboxRecord) -> None:
        pass

    def remove_pod_sandbox(self, pod: SandboxRecord) -> None:
        pass

    def update_pod_sandbox(self, pod: SandboxRecord,
                           linux: api_pb2.LinuxPodSandboxConfig) -> None:
        pass

    def post_update_pod_sandbox(self, pod: SandboxRecord) -> None:
        pass

    def create_container(self, pod: SandboxRecord, ctr: ContainerRecord,
                         spec: ContainerSpec) -> ContainerSpec:
        return spec

    def post_create_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pass

    def start_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pass

    def post_start_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pass

    def stop_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pass

    def remove_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pass

    def update_container(self, pod: SandboxRecord, ctr: ContainerRecord,
                         resources: dict[str, Any]) -> dict[str, Any]:
        return resources

    def post_update_container(self, pod: SandboxRecord, ctr: ContainerRecord) -> None:
        pass


NO_NRI: NriHooks = NoNri()
