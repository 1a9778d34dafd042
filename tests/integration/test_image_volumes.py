"""Image volumes (Mount.image, KEP-4639): a pulled image mounted read-only into a container,
whole or one sub path of it, reported in ContainerStatus and kept from RemoveImage."""
from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from proto import api_pb2
from tests.support import oci_build as ob
from tests.support.containers import ContainerEnv

MNT = "/mnt/image-volume"


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        # two layers: the second adds a file, deletes one (whiteout) and adds symlinks that
        # point at an absolute path (must resolve inside the image) and out of the image
        lower = ob.Layer.build([ob.File("data/a.txt", "one\n"), ob.File("data/gone.txt", "x"),
                                ob.File("data/sub/deep.txt", "deep\n")])
        upper = ob.Layer.build([ob.File("data/b.txt", "two\n"), ob.Whiteout("data/gone.txt"),
                                ob.Symlink("link", "/data"),
                                ob.Symlink("escape", "../../../../../../../tmp")])
        image = ob.Image([lower, upper], ob.Config(cmd=["none"]))
        ob.push_image(e.registry.url, "ctr/volume", "v1", image)
        e.refs["volume"] = f"{e.registry.host}/ctr/volume:v1"
        e.cri.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(
            image=e.refs["volume"])))
        e.image_ids["volume"] = image.config_digest
        yield e
        try:
            e.cri.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(
                image=e.refs["volume"])))
        except grpc.RpcError:
            pass


def _mount(image: str, path: str = MNT, sub_path: str = "", readonly: bool = True
           ) -> api_pb2.Mount:
    return api_pb2.Mount(container_path=path, readonly=readonly, image_sub_path=sub_path,
                         image=api_pb2.ImageSpec(image=image))


def _code(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return exc.code(), exc.details() or ""


def _sh(env: ContainerEnv, script: str, *mounts: api_pb2.Mount) -> str:
    return env.output(["sh", "-c", script], mounts=list(mounts))


def test_multi_layer_image_volume_is_merged_and_read_only(env: ContainerEnv) -> None:
    out = _sh(env, f"cat {MNT}/data/a.txt {MNT}/data/b.txt; "
                   f"test -e {MNT}/data/gone.txt && echo gone-visible; "
                   f"touch {MNT}/new 2>/dev/null && echo writable; "
                   f"grep ' {MNT} ' /proc/self/mounts | cut -d' ' -f4 | tr , '\\n' | grep -x ro",
              _mount(env.refs["volume"]))
    assert out == "one\ntwo\nro\n"


def test_single_layer_image_volume_runs_binaries(env: ContainerEnv) -> None:
    # busybox is one layer: a read-only bind of it, executable (not noexec)
    out = _sh(env, f"{MNT}/bin/busybox echo from-volume; touch {MNT}/x 2>/dev/null || "
                   "echo read-only", _mount(env.busybox))
    assert out == "from-volume\nread-only\n"


def test_status_reports_image_and_digest_and_image_stays_in_use(env: ContainerEnv) -> None:
    cid = env.create(env.config(["sleep", "1000"], mounts=[_mount(env.refs["volume"])]))
    st = env.status(cid)
    (m,) = [m for m in st.mounts if m.container_path == MNT]
    assert m.image.image == env.refs["volume"] and m.readonly
    assert m.image.image_ref == env.image_ids["volume"]
    with pytest.raises(grpc.RpcError) as err:
        env.cri.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(
            image=env.refs["volume"])))
    assert _code(err.value)[0] == grpc.StatusCode.FAILED_PRECONDITION
    env.remove(cid)
    spec = api_pb2.ImageSpec(image=env.refs["volume"])
    env.cri.RemoveImage(api_pb2.RemoveImageRequest(image=spec))  # no longer in use
    assert env.cri.PullImage(api_pb2.PullImageRequest(image=spec)).image_ref == \
        env.image_ids["volume"]


@pytest.mark.parametrize("sub_path", ["data", "link", "./data/"])
def test_sub_path_mounts_only_that_directory(env: ContainerEnv, sub_path: str) -> None:
    out = _sh(env, f"cat {MNT}/a.txt {MNT}/b.txt {MNT}/sub/deep.txt; ls {MNT}/data 2>&1 "
                   "| grep -q 'No such' && echo only-sub",
              _mount(env.refs["volume"], sub_path=sub_path))
    assert out == "one\ntwo\ndeep\nonly-sub\n"


def test_sub_path_of_a_single_layer_image_and_a_file(env: ContainerEnv) -> None:
    out = _sh(env, f"grep -c root {MNT}/passwd; cat /file.txt",
              _mount(env.busybox, sub_path="etc"),
              _mount(env.refs["volume"], path="/file.txt", sub_path="data/sub/deep.txt"))
    assert out == "1\ndeep\n"


@pytest.mark.parametrize("sub_path", ["not-existing", "escape", "escape/x", "data/a.txt/x"])
def test_missing_sub_path_is_refused_at_create(env: ContainerEnv, sub_path: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        env.create(env.config(["true"], mounts=[_mount(env.refs["volume"],
                                                       sub_path=sub_path)]))
    code, msg = _code(err.value)
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), msg
    assert "sub_path" in msg


@pytest.mark.parametrize("sub_path", ["../etc", "/etc", "data/../../etc"])
def test_sub_path_leaving_the_image_is_invalid(env: ContainerEnv, sub_path: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        env.create(env.config(["true"], mounts=[_mount(env.busybox, sub_path=sub_path)]))
    assert _code(err.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_writable_image_volume_is_invalid(env: ContainerEnv) -> None:
    with pytest.raises(grpc.RpcError) as err:
        env.create(env.config(["true"], mounts=[_mount(env.busybox, readonly=False)]))
    code, msg = _code(err.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "read-only" in msg


def test_image_not_pulled_is_not_found(env: ContainerEnv) -> None:
    with pytest.raises(grpc.RpcError) as err:
        env.create(env.config(["true"], mounts=[_mount(f"{env.registry.host}/ctr/absent:v9")]))
    code, msg = _code(err.value)
    assert code == grpc.StatusCode.NOT_FOUND and "pull" in msg
