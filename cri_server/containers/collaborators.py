"""What the container part needs of the other parts, as the ContainerManager sees them.

The pod part (cri_server.sandboxes.SandboxManager) also needs the container part; these
Protocols keep the two managers from importing each other (cri_server.wiring joins them).
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from cri_server.sandboxes.record import SandboxRecord
from imageservice.manifest import ImageConfig
from imageservice.metadata import ImageRecord


class PodLookup(Protocol):
    """The pod part: SandboxManager."""

    def get(self, pod_id: str) -> SandboxRecord:
        """The pod's record; NotFound if there is none."""
        ...

    def while_ready(self, pod_id: str) -> AbstractContextManager[SandboxRecord]:
        """Holds off Stop/RemovePodSandbox while a container is added to the READY pod."""
        ...


class ImageLookup(Protocol):
    """The image part: imageservice.manager.ImageManager."""

    def resolve(self, ref: str) -> ImageRecord | None: ...

    def image_config(self, image_id: str) -> ImageConfig: ...

    def rootfs_layers(self, image_id: str) -> list[str]: ...
