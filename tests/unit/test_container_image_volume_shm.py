"""Image volume mounts (Mount.image) and the pod's shared /dev/shm in the ContainerSpec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cri_server.containers import mounts
from proto import api_pb2
from pycri_common.errors import InvalidArgument
from runtime import container_spec
from tests.unit.test_container_spec_builder import _build, _pod, _req

LAYERS = ["/snap/9/fs", "/snap/8/fs"]


def _image_mount(**kw: Any) -> api_pb2.Mount:
    base: dict[str, Any] = {"container_path": "/mnt/iv", "readonly": True,
                            "image": api_pb2.ImageSpec(image="reg/vol:1")}
    base.update(kw)
    return api_pb2.Mount(**base)


def _build_with(tmp: Path, *mnts: api_pb2.Mount, layers: list[str] = LAYERS
                ) -> dict[str, Any]:
    asked: list[str] = []

    def image_layers(ref: str) -> list[str]:
        asked.append(ref)
        return list(layers)

    spec = _build(tmp, _req(mounts=list(mnts)), image_layers=image_layers)
    assert asked == [m.image.image for m in mnts]
    return spec


def _no_layers(ref: str) -> list[str]:
    raise AssertionError(f"image {ref} resolved before the mount was checked")


def _dest(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    (m,) = [m for m in spec["mounts"] if m["destination"] == dest]
    return m


def test_multi_layer_image_volume_is_a_read_only_overlay(tmp_path: Path) -> None:
    m = _dest(_build_with(tmp_path, _image_mount()), "/mnt/iv")
    assert m["type"] == "overlay" and m["readonly"] and m["sub_path"] is None
    assert "lowerdir=/snap/9/fs:/snap/8/fs" in m["options"] and "ro" in m["options"]
    assert "noexec" not in m["options"]


def test_single_layer_image_volume_is_a_read_only_bind_with_sub_path(tmp_path: Path) -> None:
    m = _dest(_build_with(tmp_path, _image_mount(image_sub_path="etc/"), layers=["/snap/1/fs"]),
              "/mnt/iv")
    assert (m["type"], m["source"], m["readonly"], m["sub_path"]) == (
        "bind", "/snap/1/fs", True, "etc")


@pytest.mark.parametrize("kw, match", [
    ({"readonly": False}, "read-only"),
    ({"image_sub_path": "../x"}, "image_sub_path"),
    ({"image_sub_path": "/etc"}, "image_sub_path"),
    ({"host_path": "/tmp"}, "either host_path or image"),
    ({"container_path": "rel"}, "absolute"),
])
def test_bad_image_volumes(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        mounts.image_mount(_image_mount(**kw), _no_layers)


def test_spec_validation_keeps_sub_path() -> None:
    m = mounts.image_mount(_image_mount(image_sub_path="a/b"), lambda _ref: LAYERS)
    assert container_spec.Mount.from_json(m.to_json(), "mounts[0]").sub_path == "a/b"


def test_pod_ipc_containers_bind_the_pod_shm(tmp_path: Path) -> None:
    spec = _build(tmp_path, _req(), pod=_pod(tmp_path, shm_path="/run/pycri/shm/p"))
    shm = _dest(spec, "/dev/shm")
    assert (shm["type"], shm["source"]) == ("bind", "/run/pycri/shm/p")
    assert {"nosuid", "nodev", "noexec"} <= set(shm["options"])


def test_host_ipc_containers_bind_the_host_shm(tmp_path: Path) -> None:
    pod = _pod(tmp_path, namespaces={"network": "pod", "ipc": "node", "pid": "container"})
    shm = _dest(_build(tmp_path, _req(), pod=pod), "/dev/shm")
    assert (shm["type"], shm["source"]) == ("bind", "/dev/shm")


def test_pod_without_shared_shm_keeps_a_private_tmpfs(tmp_path: Path) -> None:
    shm = _dest(_build(tmp_path, _req()), "/dev/shm")
    assert shm["type"] == "tmpfs" and "size=65536k" in shm["options"]
