"""The small images the image tests (and anyone else) push to a test registry.

``push_sample_images(registry)`` builds and pushes, returning a ``SampleImages`` with
each image and its reference:

- busybox (``library/busybox:latest``): one layer, busybox_rootfs_files(), Cmd ["sh"];
- multi (``multi:latest``): busybox + a layer adding files + a layer with a whiteout
  (etc/hostname, data/old) and an opaque dir (data/opq);
- compressed (``compressed:v1``): three layers, gzip, zstd and uncompressed;
- user_num (``users:num``, USER 1000:1000) and user_name (``users:name``, USER www-data);
- multiarch (``multiarch:latest``, OCI index) and multiarch_docker
  (``multiarch:docker``, Docker manifest list): linux/amd64 (the host's arch) and
  linux/arm64 variants that differ in their config.
"""
from __future__ import annotations

from dataclasses import dataclass

from tests.support import oci_build as ob
from tests.support.registry import Registry


@dataclass
class SampleImages:
    registry: Registry
    busybox: ob.Image
    multi: ob.Image
    compressed: ob.Image
    user_num: ob.Image
    user_name: ob.Image
    multiarch_host: ob.Image
    multiarch_other: ob.Image
    multiarch_index_digest: str = ""
    multiarch_list_digest: str = ""

    def ref(self, name: str) -> str:
        return f"{self.registry.host}/{name}"


def busybox_layer() -> ob.Layer:
    return ob.Layer.build(ob.busybox_rootfs_files())


def push_sample_images(reg: Registry) -> SampleImages:
    base = busybox_layer()
    auth = reg.auth
    busybox = ob.Image([base], ob.Config(cmd=["sh"]))
    multi = ob.Image([base,
                      ob.Layer.build([ob.File("data/keep", "keep\n"), ob.File("data/old", "old\n"),
                                      ob.File("data/opq/a", "a\n"), ob.File("data/opq/b", "b\n"),
                                      ob.Symlink("data/link", "keep"),
                                      ob.Hardlink("data/hard", "data/keep")]),
                      ob.Layer.build([ob.Whiteout("etc/hostname"), ob.Whiteout("data/old"),
                                      ob.Opaque("data/opq"), ob.File("data/opq/c", "c\n")],
                                     compression="zstd")],
                     ob.Config(cmd=["sh"], working_dir="/data", stop_signal="SIGINT",
                               volumes=["/vol"], env=["PATH=/bin", "FOO=bar"]))
    compressed = ob.Image([ob.Layer.build([ob.File("g/file", "gzip\n")], "gzip"),
                           ob.Layer.build([ob.File("z/file", "zstd\n")], "zstd"),
                           ob.Layer.build([ob.File("n/file", "none\n")], "none")])
    user_num = ob.Image([base], ob.Config(user="1000:1000", cmd=["id"]), fmt="docker")
    user_name = ob.Image([base], ob.Config(user="www-data", cmd=["id"]))
    host_arch = ob.host_arch()
    other = "arm64" if host_arch != "arm64" else "amd64"
    mh = ob.Image([base], ob.Config(cmd=["sh"], labels={"arch": host_arch}))
    mo = ob.Image([base], ob.Config(cmd=["sh"], labels={"arch": other}, architecture=other))
    imgs = SampleImages(reg, busybox, multi, compressed, user_num, user_name, mh, mo)
    with ob.Pusher(reg.url, auth) as p:
        p.push_image("library/busybox", "latest", busybox)
        p.push_image("multi", "latest", multi)
        p.push_image("compressed", "v1", compressed)
        p.push_image("users", "num", user_num)
        p.push_image("users", "name", user_name)
        imgs.multiarch_index_digest = p.push_index(
            "multiarch", "latest", [(mo, "linux", other), (mh, "linux", host_arch)], "oci")
        mh_docker = ob.Image(mh.layers, mh.config, fmt="docker")
        mo_docker = ob.Image(mo.layers, mo.config, fmt="docker")
        imgs.multiarch_list_digest = p.push_index(
            "multiarch", "docker", [(mo_docker, "linux", other), (mh_docker, "linux", host_arch)],
            "docker")
    return imgs
