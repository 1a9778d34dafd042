"""In-process ImageService for tests: ImageManager + servicer + real gRPC server on a unix socket.

    with ImageServiceHarness(registry_config={...}) as h:
        h.client.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)))
        h.manager  # the ImageManager, h.root its directory

The server uses the daemon's RpcInterceptor, so errors reach the client with the
same gRPC codes as from `pycri serve`. Everything is removed on exit.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import grpc

from cri_server.image_service import ImageServiceServicer
from cri_server.interceptor import RpcInterceptor
from imageservice.manager import ImageManager
from proto import api_pb2, api_pb2_grpc
from tests.support.cri_client import CriClient


class ImageServiceHarness:
    def __init__(self, root: Path | None = None, registry_config: dict[str, Any] | None = None,
                 is_image_in_use: Callable[[str], bool] | None = None,
                 **manager_kw: Any) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pycri-imgsvc-"))
        self.root = root or self.base / "images"
        self.socket = self.base / "image.sock"
        self.manager = ImageManager(self.root, registry_config=registry_config,
                                    is_image_in_use=is_image_in_use, **manager_kw)
        ready = threading.Event()
        ready.set()
        self.server = grpc.server(ThreadPoolExecutor(max_workers=8),
                                  interceptors=[RpcInterceptor(ready)])
        api_pb2_grpc.add_ImageServiceServicer_to_server(ImageServiceServicer(self.manager),
                                                        self.server)
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.server.start()
        self.client = CriClient(str(self.socket), timeout=60)

    # -- shortcuts ---------------------------------------------------------
    def pull(self, ref: str, auth: api_pb2.AuthConfig | None = None,
             timeout: float | None = None) -> str:
        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref), auth=auth)
        return str(self.client.image.PullImage(req, timeout=timeout or 60).image_ref)

    def status(self, ref: str, verbose: bool = False) -> api_pb2.ImageStatusResponse:
        return self.client.ImageStatus(api_pb2.ImageStatusRequest(
            image=api_pb2.ImageSpec(image=ref), verbose=verbose))

    def remove(self, ref: str) -> None:
        self.client.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=ref)))

    def images(self, ref: str = "") -> list[api_pb2.Image]:
        req = api_pb2.ListImagesRequest()
        if ref:
            req.filter.image.image = ref
        return list(self.client.ListImages(req).images)

    def fs_used(self) -> tuple[int, int]:
        fs = self.client.ImageFsInfo(api_pb2.ImageFsInfoRequest()).image_filesystems[0]
        return fs.used_bytes.value, fs.inodes_used.value

    def close(self) -> None:
        self.client.close()
        self.server.stop(grace=None).wait()
        self.manager.close()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# What leftovers() finds in an image store nothing is half-made in (no pull running)
EMPTY_STORE: dict[str, list[str]] = {"snapshots": [], "ingest": [], "blobs": []}


def leftovers(root: Path) -> dict[str, list[str]]:
    """The snapshot dirs, ingest files and blobs of the image store at root."""
    return {d: sorted(os.listdir(root / d)) for d in ("snapshots", "ingest")} | {
        "blobs": sorted(str(p) for p in (root / "content/blobs").rglob("*") if p.is_file())}
