"""critest/images builds the images critest relies on, with the details its specs check.

Builds in memory (no registry, ~3 s):
layers are read back with tarfile and checked for what critest's specs depend on.
"""
from __future__ import annotations

import gzip
import importlib.machinery
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


images = _load("critest_images", REPO / "critest" / "images")
run = _load("critest_run", REPO / "critest" / "run")

pytestmark = pytest.mark.skipif(bool(images.missing_material()),
                                reason="host lacks busybox/nginx-light/gcc material")


@pytest.fixture(scope="module")
def built() -> dict[str, object]:
    b = images.Builder()
    out: dict[str, object] = {}
    for target in images.catalogue(b):
        image = target.build()
        for tag in target.tags:
            out[f"{target.repo}:{tag}"] = image
    return out


def members(image: object) -> dict[str, tarfile.TarInfo]:
    found: dict[str, tarfile.TarInfo] = {}
    for layer in image.layers:  # type: ignore[attr-defined]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tf:
            for ti in tf.getmembers():
                found[ti.name] = ti
    return found


def file_data(image: object, name: str) -> bytes:
    for layer in reversed(image.layers):  # type: ignore[attr-defined]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer.blob))) as tf:
            try:
                f = tf.extractfile(name)
            except KeyError:
                continue
            assert f is not None
            return f.read()
    raise KeyError(name)


def test_busybox_applets_are_hard_links_so_masking_ls_masks_only_ls(built):
    m = members(built["e2e-test-images/busybox:1.29-2"])
    assert m["bin/busybox"].isfile()
    for applet in ("ls", "sh", "top", "sleep", "netstat", "pidof", "id"):
        ti = m[f"bin/{applet}"]
        assert ti.islnk() and ti.linkname == "bin/busybox", applet
        assert ti.mode & 0o111, f"{applet}: a hard link's mode must keep the x bits"
    assert m["usr/bin/pgrep"].mode & 0o111 and m["usr/bin/ipcs"].isfile()
    assert m["tmp"].mode & 0o1777 == 0o1777
    assert any(n.endswith("libc.so.6") for n in m), "dynamic busybox needs glibc"


def test_user_images_declare_their_users(built):
    def user(ref: str) -> str:
        return built[ref].config.user  # type: ignore[attr-defined]
    cri = "k8s-staging-cri-tools"
    assert user(f"{cri}/test-image-user-uid:latest") == "1002"
    assert user(f"{cri}/test-image-user-username:latest") == "www-data"
    assert user(f"{cri}/test-image-user-uid-group:latest") == "1003:1004"
    assert user(f"{cri}/test-image-user-username-group:latest") == "www-data:1004"
    img = built[f"{cri}/test-image-predefined-group:latest"]
    assert img.config.user == "1000"  # type: ignore[attr-defined]
    group = file_data(img, "etc/group").decode()
    assert "group-defined-in-image:x:50000:default-user" in group


def test_nonewprivs_binary_is_setuid_root(built):
    ti = members(built["e2e-test-images/nonewprivs:1.3"])["usr/local/bin/nnp"]
    assert ti.mode & 0o4000 and ti.uid == 0


def test_nginx_images_listen_where_critest_connects(built):
    for ref, port in (("e2e-test-images/nginx:1.14-2", 80),
                      (f"k8s-staging-cri-tools/hostnet-nginx-{images.ARCH}:latest", 12003)):
        conf = file_data(built[ref], "etc/nginx/conf.d/default.conf").decode()
        assert f"listen {port};" in conf
        assert "pid /var/run/nginx.pid;" in file_data(built[ref], "etc/nginx/nginx.conf").decode()
        assert built[ref].config.cmd == ["nginx", "-g", "daemon off;"]  # type: ignore[attr-defined]


def test_identity_of_images(built):
    cri = "k8s-staging-cri-tools"
    ids = {ref: img.config_digest for ref, img in built.items()}  # type: ignore[attr-defined]
    assert len({ids[f"{cri}/test-image-{n}:latest"] for n in (1, 2, 3)}) == 3
    assert len({ids[f"{cri}/test-image-tags:{n}"] for n in (1, 2, 3)}) == 1
    assert ids["pause:3.9"] != ids["pause:3.10"]
    assert ids["docker/library/busybox:1"] != ids["e2e-test-images/busybox:1.29-2"]


def test_builds_are_deterministic(built):
    again = images.busybox_layer()
    assert again.digest == built["e2e-test-images/busybox:1.29-2"].layers[0].digest


def test_hosts_files_never_fall_back_to_the_internet(tmp_path):
    images.write_hosts(tmp_path, "127.0.0.1:5000")
    for host in ("registry.k8s.io", "k8s.gcr.io", "gcr.io", "public.ecr.aws", "docker.io"):
        cfg = tomllib.loads((tmp_path / host / "hosts.toml").read_text())
        assert cfg["server"] == "http://127.0.0.1:5000"
        assert list(cfg["host"]) == ["http://127.0.0.1:5000"]


def test_expected_failures_list_has_a_reason_per_entry():
    entries = run.read_expected(REPO / "critest" / "expected-failures.txt")
    assert entries and all(e.reason for e in entries)


def test_run_skips_cleanly_without_critest(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CRITEST"}
    env["PATH"] = "/usr/bin:/bin"
    if shutil.which("critest", path=env["PATH"]):
        pytest.skip("a critest binary is installed in /usr/bin or /bin")
    r = subprocess.run([sys.executable, str(REPO / "critest" / "run")], env=env, check=False,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SKIPPED" in r.stdout
