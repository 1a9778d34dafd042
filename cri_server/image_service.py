"""The CRI ImageService: each RPC validates, calls the ImageManager, builds the response.

``ImageServiceServicer(manager, metrics=None)`` where manager is an
``imageservice.manager.ImageManager`` and metrics (optional) has
``observe_pull(ok: bool, downloaded_bytes: int)``. Errors are raised as
pycri_common.errors classes; the interceptor turns them into gRPC codes.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from imageservice.auth import Credentials
from imageservice.manager import ImageManager
from imageservice.manifest import ImageConfig, user_fields
from imageservice.metadata import ImageRecord
from proto import api_pb2, api_pb2_grpc
from pycri_common.errors import InvalidArgument
from pycri_common.text import shorten

log = logging.getLogger(__name__)

STREAM_BATCH = 100


def image_message(rec: ImageRecord) -> api_pb2.Image:
    """The CRI Image for a stored image (uid/username from the config's User)."""
    uid, username = user_fields(ImageConfig.parse(rec.config).user)
    img = api_pb2.Image(
        id=rec.id, repo_tags=rec.repo_tags, repo_digests=rec.repo_digests, size=rec.size,
        username=username, pinned=rec.pinned,
        spec=api_pb2.ImageSpec(image=rec.id, annotations=rec.annotations,
                               runtime_handler=rec.runtime_handler))
    if uid is not None:
        img.uid.value = uid
    return img


def _image_ref(spec: api_pb2.ImageSpec, rpc: str) -> str:
    ref = spec.image.strip() if spec is not None else ""
    if not ref:
        raise InvalidArgument(f"{rpc} needs image.image (a reference or an image ID)")
    return ref


def _credentials(auth: api_pb2.AuthConfig) -> tuple[Credentials | None, str]:
    creds = Credentials.from_auth_config(auth.username, auth.password, auth.auth,
                                         auth.identity_token, auth.registry_token)
    return (creds if creds else None), auth.server_address


class _RpcCancelled(threading.Event):
    """Set when the pull must stop: by the manager, or because the gRPC client went away
    (deadline passed, connection closed), which is checked on each look."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        super().__init__()
        self.context = context

    def is_set(self) -> bool:
        return super().is_set() or not self.context.is_active()


class ImageServiceServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, manager: ImageManager, metrics: Any = None) -> None:
        self.manager = manager
        self.metrics = metrics

    def ListImages(self, request: api_pb2.ListImagesRequest,
                   context: grpc.ServicerContext) -> api_pb2.ListImagesResponse:
        recs = self.manager.list_images(request.filter.image.image.strip())
        return api_pb2.ListImagesResponse(images=[image_message(r) for r in recs])

    def StreamImages(self, request: api_pb2.StreamImagesRequest,
                     context: grpc.ServicerContext) -> Iterator[api_pb2.StreamImagesResponse]:
        recs = self.manager.list_images(request.filter.image.image.strip())
        for i in range(0, len(recs), STREAM_BATCH):
            yield api_pb2.StreamImagesResponse(
                images=[image_message(r) for r in recs[i:i + STREAM_BATCH]])

    def ImageStatus(self, request: api_pb2.ImageStatusRequest,
                    context: grpc.ServicerContext) -> api_pb2.ImageStatusResponse:
        rec = self.manager.resolve(_image_ref(request.image, "ImageStatus"))
        if rec is None:
            return api_pb2.ImageStatusResponse()   # kubelet expects "absent", not NOT_FOUND
        info = self.manager.verbose_info(rec) if request.verbose else {}
        return api_pb2.ImageStatusResponse(image=image_message(rec), info=info)

    def PullImage(self, request: api_pb2.PullImageRequest,
                  context: grpc.ServicerContext) -> api_pb2.PullImageResponse:
        ref = _image_ref(request.image, "PullImage")
        creds, server = _credentials(request.auth)
        cancel = _RpcCancelled(context)   # client went away -> stop downloading
        pod = request.sandbox_config.metadata
        if pod.name:
            log.info("pulling %s for pod %s/%s", shorten(ref), shorten(pod.namespace),
                     shorten(pod.name))
        before = self.manager.stats["bytes_downloaded"]
        ok = False
        try:
            image_id = self.manager.pull(
                ref, creds=creds, server_address=server, cancel=cancel,
                runtime_handler=request.image.runtime_handler,
                annotations=dict(request.image.annotations))
            ok = True
        finally:
            if self.metrics is not None:
                self.metrics.observe_pull(ok, self.manager.stats["bytes_downloaded"] - before)
        return api_pb2.PullImageResponse(image_ref=image_id)

    def RemoveImage(self, request: api_pb2.RemoveImageRequest,
                    context: grpc.ServicerContext) -> api_pb2.RemoveImageResponse:
        self.manager.remove(_image_ref(request.image, "RemoveImage"))
        return api_pb2.RemoveImageResponse()

    def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest,
                    context: grpc.ServicerContext) -> api_pb2.ImageFsInfoResponse:
        u = self.manager.fs_info()
        usage = api_pb2.FilesystemUsage(
            timestamp=u.timestamp_ns, fs_id=api_pb2.FilesystemIdentifier(mountpoint=u.mountpoint),
            used_bytes=api_pb2.UInt64Value(value=u.used_bytes),
            inodes_used=api_pb2.UInt64Value(value=u.inodes_used))
        return api_pb2.ImageFsInfoResponse(image_filesystems=[usage])
