"""Containers: records, name reservation, ContainerSpec building, lifecycle, exec/attach glue.

- record.py          the persisted ContainerRecord
- image_config.py    image config view (entrypoint/cmd/env/user/...) and USER parsing
- command.py         ENTRYPOINT/CMD merging and env merging (Kubernetes/Docker rules)
- security.py        security context -> capabilities, user, seccomp, apparmor, masked paths
- mounts.py          CRI mounts, pod files, image volumes, devices -> spec mounts
- pod_view.py        what the container code needs from a pod sandbox record
- spec_builder.py    CreateContainerRequest + pod + image -> ContainerSpec (contract 4, docs/architecture.md)
- manager.py         ContainerManager: create/start/stop/remove/status/list/exec_sync
- collaborators.py   what ContainerManager needs of the pod and image parts (Protocols)
- exec_sync.py       ExecSync through the shim (pipes, cap, timeout)
- streaming_backend.py  the streaming server's backend (exec/attach/port-forward)
- convert.py         records -> CRI protobuf messages
- events.py          lifecycle events -> ContainerEventResponse on the event bus

cri_server.wiring builds the ContainerManager and the streaming server with the other parts.

Resource validation and conversion (LinuxContainerResources <-> dict) is
cri_server.resources, shared with the pod sandboxes (pod resources and overhead).
"""
