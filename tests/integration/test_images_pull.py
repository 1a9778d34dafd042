"""ImageService through real gRPC against a real registry (docker-registry on 127.0.0.1)."""
from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from imageservice.manager import ImageManager
from proto import api_pb2
from tests.support import oci_build as ob
from tests.support.cri_client import rpc_error
from tests.support.image_harness import ImageServiceHarness, leftovers
from tests.support.registry import Registry, registry_available
from tests.support.sample_images import SampleImages, push_sample_images
from tests.support.token_proxy import TokenProxy

pytestmark = pytest.mark.skipif(not registry_available(), reason="docker-registry not installed")


@pytest.fixture(scope="module")
def images() -> Iterator[SampleImages]:
    with Registry() as reg:
        yield push_sample_images(reg)


@pytest.fixture
def svc() -> Iterator[ImageServiceHarness]:
    with ImageServiceHarness() as h:
        yield h


# -- pull, status, list, remove -----------------------------------------------

def test_pull_by_tag_and_status_by_every_kind_of_reference(images, svc):
    ref = images.ref("library/busybox:latest")
    image_id = svc.pull(ref)
    assert image_id == images.busybox.config_digest
    repo_digest = f"{images.registry.host}/library/busybox@{images.busybox.manifest_digest}"
    kinds = [image_id, image_id[7:], image_id[7:19], image_id[:19], ref,
             images.ref("library/busybox"), repo_digest]
    for kind in kinds:
        img = svc.status(kind).image
        assert img.id == image_id, kind
        assert list(img.repo_tags) == [ref]
        assert list(img.repo_digests) == [repo_digest]
        assert img.size == images.busybox.size
        assert not img.HasField("uid") and img.username == ""
    # absent: an empty answer, not an error (kubelet relies on it)
    resp = svc.status(images.ref("library/busybox:nope"))
    assert not resp.HasField("image")
    assert not svc.status("sha256:" + "0" * 64).HasField("image")
    err = rpc_error(svc.status, "Not A Ref!")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_verbose_status_carries_the_image_config(images, svc):
    image_id = svc.pull(images.ref("multi"))
    resp = svc.status(image_id, verbose=True)
    info = json.loads(resp.info["info"])
    cfg = info["imageSpec"]["config"]
    assert cfg["WorkingDir"] == "/data" and cfg["StopSignal"] == "SIGINT"
    assert cfg["Env"] == ["PATH=/bin", "FOO=bar"] and "/vol" in cfg["Volumes"]
    assert info["manifestDigest"] == images.multi.manifest_digest
    assert len(info["snapshots"]) == 3
    conf = svc.manager.image_config(image_id)
    assert (conf.working_dir, conf.stop_signal, conf.volumes, conf.cmd) == (
        "/data", "SIGINT", ["/vol"], ["sh"])


def test_pull_by_digest(images, svc):
    ref = f"{images.registry.host}/multi@{images.multi.manifest_digest}"
    assert svc.pull(ref) == images.multi.config_digest
    img = svc.status(ref).image
    assert list(img.repo_tags) == [] and list(img.repo_digests) == [ref]
    # name:tag@digest pulls by digest
    ref2 = f"{images.registry.host}/multi:whatever@{images.multi.manifest_digest}"
    assert svc.pull(ref2) == images.multi.config_digest


def test_pull_unknown_image_is_not_found(images, svc):
    err = rpc_error(svc.pull, images.ref("library/busybox:missing"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "not found" in err.details()
    err = rpc_error(svc.pull, "docker.io/library/UPPER")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_user_from_config(images, svc):
    num = svc.status(svc.pull(images.ref("users:num"))).image
    assert num.uid.value == 1000 and num.username == ""
    name = svc.status(svc.pull(images.ref("users:name"))).image
    assert not name.HasField("uid") and name.username == "www-data"


def test_manifest_list_and_index_resolve_to_host_platform(images, svc):
    want = images.multiarch_host.config_digest
    assert svc.pull(images.ref("multiarch:latest")) == want
    assert svc.pull(images.ref("multiarch:docker")) != images.multiarch_other.config_digest
    img = svc.status(images.ref("multiarch:latest")).image
    assert f"{images.registry.host}/multiarch@{images.multiarch_index_digest}" in img.repo_digests
    assert svc.manager.image_config(want).labels == {"arch": ob.host_arch()}


def test_gzip_zstd_and_plain_layers(images, svc):
    image_id = svc.pull(images.ref("compressed:v1"))
    layers = svc.manager.rootfs_layers(image_id)   # top first
    assert [Path(d, p).read_text() for d, p in zip(layers, ["n/file", "z/file", "g/file"], strict=True)] == [
        "none\n", "zstd\n", "gzip\n"]


def test_list_with_filter_and_stream(images, svc):
    a = svc.pull(images.ref("library/busybox"))
    b = svc.pull(images.ref("users:num"))
    assert {i.id for i in svc.images()} == {a, b}
    assert [i.id for i in svc.images(images.ref("users:num"))] == [b]
    assert svc.images(images.ref("users:other")) == []
    streamed = [i.id for r in svc.client.image.StreamImages(api_pb2.StreamImagesRequest())
                for i in r.images]
    assert sorted(streamed) == sorted([a, b])


def test_remove_by_one_tag_removes_all_and_collects_garbage(images, svc):
    before = svc.fs_used()
    image_id = svc.pull(images.ref("users:name"))
    # the same image under a second tag of another repository
    with ob.Pusher(images.registry.url) as p:
        p.push_image("again", "t1", images.user_name)
    assert svc.pull(images.ref("again:t1")) == image_id
    img = svc.status(image_id).image
    assert len(img.repo_tags) == 2 and len(img.repo_digests) == 2
    grown = svc.fs_used()
    assert grown[0] > before[0] + 1_000_000 and grown[1] > before[1]
    svc.remove(images.ref("again:t1"))
    assert not svc.status(images.ref("users:name")).HasField("image")
    assert svc.images() == []
    shrunk = svc.fs_used()
    assert shrunk[0] < grown[0] - 1_000_000 and shrunk[1] < grown[1]
    assert leftovers(svc.root) == {"snapshots": [], "ingest": [], "blobs": []}
    svc.remove(images.ref("again:t1"))            # idempotent
    err = rpc_error(svc.remove, "")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_shared_layers_survive_removal_of_one_image(images, svc):
    a = svc.pull(images.ref("users:num"))
    b = svc.pull(images.ref("library/busybox"))
    svc.remove(a)
    layers = svc.manager.rootfs_layers(b)
    assert Path(layers[0], "bin/busybox").is_file()


def test_remove_refuses_image_in_use(images):
    in_use: set[str] = set()
    with ImageServiceHarness(is_image_in_use=lambda i: i in in_use) as h:
        image_id = h.pull(images.ref("library/busybox"))
        in_use.add(image_id)
        err = rpc_error(h.remove, images.ref("library/busybox"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "used by a container" in err.details()
        assert h.status(image_id).image.id == image_id
        in_use.clear()
        h.remove(image_id)
        assert h.images() == []


def test_whiteouts_and_opaque_dirs_in_an_overlay(images, svc):
    image_id = svc.pull(images.ref("multi"))
    layers = svc.manager.rootfs_layers(image_id)
    top = Path(layers[0])
    st = os.lstat(top / "etc/hostname")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0 and (st.st_uid, st.st_gid) == (0, 0)
    assert os.getxattr(top / "data/opq", "trusted.overlay.opaque") == b"y"
    mid = Path(layers[1])
    assert os.lstat(mid / "data/hard").st_ino == os.lstat(mid / "data/keep").st_ino
    assert os.readlink(mid / "data/link") == "keep"
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        "lowerdir=" + ":".join(layers), mnt], check=True)
        try:
            merged = Path(mnt)
            assert not (merged / "etc/hostname").exists()
            assert (merged / "etc/passwd").exists()
            assert sorted(os.listdir(merged / "data")) == ["hard", "keep", "link", "opq"]
            assert sorted(os.listdir(merged / "data/opq")) == ["c"]
            out = subprocess.run(["chroot", mnt, "/bin/sh", "-c", "echo hi; id -u www-data"],
                                 capture_output=True, text=True, check=True).stdout
            assert out == "hi\n33\n"
        finally:
            subprocess.run(["umount", mnt], check=True)


# -- sharing and failures ---------------------------------------------------------

def test_concurrent_pulls_download_each_blob_once(images, svc):
    reg = images.registry
    refs = [images.ref("multi:latest"), images.ref("multi:latest"),
            f"{reg.host}/multi@{images.multi.manifest_digest}"]
    before = {la.digest: reg.requests(f"/blobs/{la.digest}") for la in images.multi.layers}
    results: list[str] = []
    errors: list[BaseException] = []

    def pull(r: str) -> None:
        try:
            results.append(svc.pull(r))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=pull, args=(r,)) for r in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and set(results) == {images.multi.config_digest}
    for la in images.multi.layers:
        assert reg.requests(f"/blobs/{la.digest}") - before[la.digest] == 1, la.digest


def test_pull_failing_midway_leaves_nothing(images, svc):
    reg = images.registry
    img = ob.Image([ob.Layer.build([ob.File(f"f{i}", os.urandom(200_000))]) for i in range(4)])
    ob.push_image(reg.url, "broken", "v1", img)
    victim = reg.blob_path(img.layers[2].digest)
    victim.write_bytes(b"not the layer")
    err = rpc_error(svc.pull, images.ref("broken:v1"))
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE)
    assert svc.images() == []
    assert leftovers(svc.root) == {"snapshots": [], "ingest": [], "blobs": []}


@pytest.mark.parametrize("mode", ["truncate", "stall"])
def test_registry_dying_or_stalling_midway_leaves_nothing(images, mode):
    reg = images.registry
    with TokenProxy(reg.url, mode=mode) as proxy, ImageServiceHarness(
            registry_config={"stall_timeout_seconds": 1.0}) as h:
        err = rpc_error(h.pull, f"{proxy.host}/library/busybox")
        if mode == "stall":
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "stalled" in err.details()
        else:
            assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INVALID_ARGUMENT)
        assert h.images() == []
        assert leftovers(h.root) == {"snapshots": [], "ingest": [], "blobs": []}


def test_cancelled_pull_stops_downloading(images):
    reg = images.registry
    with TokenProxy(reg.url, mode="drip") as proxy, ImageServiceHarness() as h:
        err = rpc_error(h.pull, f"{proxy.host}/library/busybox", timeout=1.0)
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # the download stops (the drip would take ~70 s); the proxy sees the hang-up
        for _ in range(50):
            if h.manager._pulls.in_progress() == 0 and proxy.closed_early:
                break
            threading.Event().wait(0.1)
        assert h.manager._pulls.in_progress() == 0
        assert proxy.closed_early >= 1
        assert h.images() == []
        assert leftovers(h.root) == {"snapshots": [], "ingest": [], "blobs": []}


def test_layers_download_in_parallel(images):
    img = ob.Image([ob.Layer.build([ob.File(f"l{i}", os.urandom(10_000))], "none")
                    for i in range(4)])
    ob.push_image(images.registry.url, "parallel", "v1", img)
    with TokenProxy(images.registry.url, mode="drip") as proxy, ImageServiceHarness(
            registry_config={"max_concurrent_downloads": 3}) as h:
        assert h.pull(f"{proxy.host}/parallel:v1") == img.config_digest
        assert proxy.max_active_blobs == 3


# -- auth -------------------------------------------------------------------------

def test_basic_auth_registry(images):
    with Registry(users={"alice": "s3cret"}) as reg, ImageServiceHarness() as h:
        ob.push_image(reg.url, "private", "v1", images.user_num, auth=reg.auth)
        ref = f"{reg.host}/private:v1"
        err = rpc_error(h.pull, ref)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "credentials" in err.details()
        err = rpc_error(h.pull, ref, api_pb2.AuthConfig(username="alice", password="wrong"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert h.pull(ref, api_pb2.AuthConfig(username="alice", password="s3cret")) == \
            images.user_num.config_digest
        h.remove(ref)
        auth = base64.b64encode(b"alice:s3cret").decode()
        assert h.pull(ref, api_pb2.AuthConfig(auth=auth)) == images.user_num.config_digest
        h.remove(ref)
        # docker config.json
        cfg = h.base / "config.json"
        cfg.write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        with ImageServiceHarness(registry_config={"auth_file": str(cfg)}) as h2:
            assert h2.pull(ref) == images.user_num.config_digest


def test_bearer_token_flow_and_redirected_blobs(images):
    reg = images.registry
    with TokenProxy(reg.url, users={"bob": "pw"}) as proxy, ImageServiceHarness() as h:
        ref = f"{proxy.host}/library/busybox:latest"
        err = rpc_error(h.pull, ref)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        before = reg.requests(f"/blobs/{images.busybox.layers[0].digest}")
        image_id = h.pull(ref, api_pb2.AuthConfig(username="bob", password="pw"))
        assert image_id == images.busybox.config_digest
        assert proxy.blob_requests >= 2            # config + layer, answered with redirects
        assert reg.requests(f"/blobs/{images.busybox.layers[0].digest}") == before + 1
        assert proxy.token_requests >= 2           # refused once, granted once
        h.remove(ref)
        # a registry token is used as is
        assert h.pull(ref, api_pb2.AuthConfig(registry_token=proxy.token)) == image_id
        h.remove(ref)
        # an identity token is exchanged for an access token (OAuth2 refresh_token grant)
        err = rpc_error(h.pull, ref, api_pb2.AuthConfig(identity_token="wrong"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert h.pull(ref, api_pb2.AuthConfig(identity_token=proxy.refresh_token)) == image_id


# -- mirrors -----------------------------------------------------------------------

def test_mirror_serves_registry_k8s_io_pause(images, tmp_path):
    reg = images.registry
    pause = ob.Image([ob.Layer.build([ob.File("pause", b"\x7fELF-not-really", mode=0o755)])],
                     ob.Config(entrypoint=["/pause"]))
    ob.push_image(reg.url, "pause", "3.9", pause)
    hosts = tmp_path / "certs.d" / "registry.k8s.io"
    hosts.mkdir(parents=True)
    # upstream pointed at a closed local port: the test never leaves 127.0.0.1
    (hosts / "hosts.toml").write_text(
        'server = "http://127.0.0.1:9"\n\n'
        f'[host."http://{reg.host}"]\n  capabilities = ["pull", "resolve"]\n')
    with ImageServiceHarness(registry_config={"config_path": str(tmp_path / "certs.d")},
                             pinned_images=["registry.k8s.io/pause:3.9"]) as h:
        before = reg.requests("/v2/pause/manifests/3.9")
        assert h.pull("registry.k8s.io/pause:3.9") == pause.config_digest
        assert reg.requests("/v2/pause/manifests/3.9") == before + 1
        img = h.status("registry.k8s.io/pause:3.9").image
        assert list(img.repo_tags) == ["registry.k8s.io/pause:3.9"]
        assert img.pinned
        assert list(img.repo_digests) == [f"registry.k8s.io/pause@{pause.manifest_digest}"]


# -- crash consistency ------------------------------------------------------------

def test_kill_9_mid_pull_then_restart_leaves_a_consistent_store(images, tmp_path):
    root = tmp_path / "images"
    with TokenProxy(images.registry.url, mode="drip") as proxy:
        child = subprocess.Popen(
            [sys.executable, "-c",
             ("import sys; from imageservice.manager import ImageManager;"
              "ImageManager(sys.argv[1]).pull(sys.argv[2])"),
             str(root), f"{proxy.host}/library/busybox"],
            cwd=Path(__file__).resolve().parents[2])
        try:
            for _ in range(100):        # until the layer download is under way: its first
                # entries are in a snapshots/tmp-* dir (the blob itself is not kept)
                if any((root / "snapshots").glob("tmp-*/fs/*")):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the child never started downloading")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    # a leftover half snapshot as if killed while unpacking, and an orphan snapshot dir
    (root / "snapshots" / "tmp-dead" / "fs").mkdir(parents=True)
    (root / "snapshots" / "99" / "fs").mkdir(parents=True)
    m = ImageManager(root)
    try:
        assert m.list_images() == []
        assert leftovers(root) == {"snapshots": [], "ingest": [], "blobs": []}
        # and the store works afterwards
        assert m.pull(images.ref("library/busybox")) == images.busybox.config_digest
    finally:
        m.close()


# -- TLS and custom CAs -----------------------------------------------------------

def test_https_registry_with_custom_ca(images, tmp_path):
    with Registry(tls=True) as reg:
        with ob.Pusher(reg.url, ca_file=str(reg.ca_path)) as p:
            p.push_image("secure", "v1", images.user_name)
        ref = f"{reg.host}/secure:v1"

        def hosts(body: str) -> dict[str, object]:
            d = tmp_path / body[:8].strip('"= ') / reg.host
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts.toml").write_text(f'server = "https://{reg.host}"\n{body}\n')
            return {"config_path": str(d.parent)}
        with ImageServiceHarness(registry_config=hosts("")) as h:
            err = rpc_error(h.pull, ref)   # self-signed, not trusted
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert "CERTIFICATE_VERIFY_FAILED" in err.details()
        with ImageServiceHarness(registry_config=hosts(f'ca = "{reg.ca_path}"')) as h:
            assert h.pull(ref) == images.user_name.config_digest
        with ImageServiceHarness(registry_config=hosts("skip_verify = true")) as h:
            assert h.pull(ref) == images.user_name.config_digest
