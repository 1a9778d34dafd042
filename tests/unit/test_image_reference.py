import pytest

from imageservice.reference import looks_like_image_id, normalize, parse
from pycri_common.errors import InvalidArgument

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("ref,want", [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("user/app", "docker.io/user/app:latest"),
    ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
    ("localhost/app:v1", "localhost/app:v1"),
    ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}"),
    (f"127.0.0.1:5000/app:v2@{D}", f"127.0.0.1:5000/app:v2@{D}"),
    ("gcr.io/k8s-staging-cri-tools/test-image-1:latest",
     "gcr.io/k8s-staging-cri-tools/test-image-1:latest"),
    ("a__b/c-d.e:T_1.x", "docker.io/a__b/c-d.e:T_1.x"),
])
def test_normalises_like_kubelet(ref, want):
    assert normalize(ref) == want


def test_parts():
    r = parse(f"127.0.0.1:5000/team/app:v2@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("127.0.0.1:5000", "team/app", "v2", D)
    assert r.object == D and r.tagged == "127.0.0.1:5000/team/app:v2"
    assert parse("busybox").object == "latest"
    assert parse("busybox", default_tag=False).tag == ""


@pytest.mark.parametrize("bad,why", [
    ("", "empty"),
    ("busybox:", "tag"),
    ("busybox:bad/tag", "host"),
    ("docker.io/library/BusyBox", "lowercase"),
    ("busybox@sha256:short", "digest"),
    ("busybox@md5:" + "a" * 32, "digest"),
    ("a b", "whitespace"),
    ("-bad.io/app", "host"),
    ("app/-x", "path component"),
    ("a" * 64, "image ID"),
    ("x/" + "a" * 300, "longer"),
])
def test_bad_references_say_why(bad, why):
    with pytest.raises(InvalidArgument) as exc:
        parse(bad)
    assert why in str(exc.value)


def test_image_id_detection():
    assert looks_like_image_id(D) and looks_like_image_id("a" * 64)
    assert not looks_like_image_id("a" * 12) and not looks_like_image_id("busybox")
