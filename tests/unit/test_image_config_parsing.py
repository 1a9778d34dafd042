"""hosts.toml, auth challenges and docker config, manifests and platforms, chain IDs."""
import base64
import json

import pytest

from imageservice.auth import Credentials, DockerConfig, parse_challenge
from imageservice.manifest import (
    Descriptor,
    ImageConfig,
    detect_media_type,
    parse_manifest,
    select_platform,
    user_fields,
)
from imageservice.registry_hosts import RegistryHosts, is_loopback_host
from imageservice.snapshots import chain_ids
from pycri_common.errors import InvalidArgument, NotFound

H = "sha256:" + "1" * 64


def test_loopback_hosts_use_plain_http_by_default():
    hosts = RegistryHosts("")
    for host in ("127.0.0.1:5000", "127.1.2.3", "localhost:5000", "[::1]:5000"):
        assert is_loopback_host(host)
        assert hosts.endpoints(host)[0].api_base == f"http://{host}/v2"
    assert hosts.endpoints("registry.k8s.io")[0].api_base == "https://registry.k8s.io/v2"
    assert hosts.endpoints("docker.io")[0].api_base == "https://registry-1.docker.io/v2"
    assert not is_loopback_host("10.0.0.1:5000")
    # a name under .localhost is resolved by DNS like any other: no plain HTTP for it
    assert not is_loopback_host("registry.localhost:5000")
    assert hosts.endpoints("registry.localhost:5000")[0].api_base.startswith("https://")


def test_hosts_toml_mirrors_in_order_then_upstream(tmp_path):
    d = tmp_path / "registry.k8s.io"
    d.mkdir()
    (d / "hosts.toml").write_text(
        'server = "https://registry.k8s.io"\n'
        '[host."http://127.0.0.1:5000"]\n  capabilities = ["pull", "resolve"]\n'
        '[host."https://mirror.example:8443/prefix"]\n  capabilities = ["pull"]\n'
        '  skip_verify = true\n  override_path = true\n'
        '  [host."https://mirror.example:8443/prefix".header]\n    x-a = "b"\n')
    hosts = RegistryHosts(f"/nonexistent:{tmp_path}")
    eps = hosts.endpoints("registry.k8s.io", resolve=False)
    assert [e.api_base for e in eps] == ["http://127.0.0.1:5000/v2",
                                         "https://mirror.example:8443/prefix",
                                         "https://registry.k8s.io/v2"]
    assert eps[1].skip_verify and eps[1].verify() is False and eps[1].headers == (("x-a", "b"),)
    assert [e.is_mirror for e in eps] == [True, True, False]
    # tag resolution only from hosts with "resolve"
    assert len(hosts.endpoints("registry.k8s.io", resolve=True)) == 2


def test_default_dir_and_port_dir_names(tmp_path):
    (tmp_path / "_default").mkdir()
    (tmp_path / "_default" / "hosts.toml").write_text('[host."http://127.0.0.1:1"]\n')
    (tmp_path / "10.0.0.1:5000").mkdir()
    (tmp_path / "10.0.0.1:5000" / "hosts.toml").write_text('server = "http://10.0.0.1:5000"\n')
    hosts = RegistryHosts(str(tmp_path))
    assert hosts.endpoints("quay.io")[0].api_base == "http://127.0.0.1:1/v2"
    assert [e.api_base for e in hosts.endpoints("10.0.0.1:5000")] == ["http://10.0.0.1:5000/v2"]


def test_bad_hosts_toml_names_the_file_and_key(tmp_path):
    (tmp_path / "r.io").mkdir()
    (tmp_path / "r.io" / "hosts.toml").write_text('[host."http://x"]\n  mirror_of = 1\n')
    with pytest.raises(InvalidArgument) as exc:
        RegistryHosts(str(tmp_path)).endpoints("r.io")
    assert "mirror_of" in str(exc.value) and "hosts.toml" in str(exc.value)


def test_inline_hosts():
    hosts = RegistryHosts("", {"docker.io": {"host": {"http://127.0.0.1:7": {}}}})
    assert hosts.endpoints("docker.io")[0].api_base == "http://127.0.0.1:7/v2"


def test_www_authenticate_parsing():
    scheme, p = parse_challenge('Bearer realm="https://auth.example/token",'
                                'service="registry.example",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert p == {"realm": "https://auth.example/token", "service": "registry.example",
                 "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_credentials_from_auth_field_and_docker_config(tmp_path):
    auth = base64.b64encode(b"u:p:with:colons").decode()
    c = Credentials.from_auth_config(auth=auth)
    assert (c.username, c.password) == ("u", "p:with:colons")
    assert "p:with" not in repr(c)
    with pytest.raises(InvalidArgument):
        Credentials.from_auth_config(auth=base64.b64encode(b"nocolon").decode())
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "127.0.0.1:5000": {"username": "a", "password": "b"},
        "https://quay.io": {"identitytoken": "tok"}}}))
    dc = DockerConfig(str(cfg))
    assert dc.lookup("docker.io").username == "hub"
    assert dc.lookup("127.0.0.1:5000").password == "b"
    assert dc.lookup("quay.io").identity_token == "tok"
    assert not dc.lookup("ghcr.io")
    assert not DockerConfig(str(tmp_path / "absent.json")).lookup("docker.io")


def _desc(arch, variant="", os_name="linux"):
    plat = {"os": os_name, "architecture": arch}
    if variant:
        plat["variant"] = variant
    return Descriptor("application/vnd.oci.image.manifest.v1+json", H, 1, plat)


def test_platform_selection():
    entries = [_desc("arm64", "v8"), _desc("amd64"), _desc("amd64", os_name="windows")]
    assert select_platform(entries, ("linux", "amd64", "")).platform["architecture"] == "amd64"
    assert select_platform(entries, ("linux", "arm64", "v8")).platform["variant"] == "v8"
    with pytest.raises(NotFound) as exc:
        select_platform(entries, ("linux", "s390x", ""))
    assert "linux/arm64" in str(exc.value)


def test_manifest_parsing_and_validation():
    m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": H,
                    "size": 2},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": H,
                     "size": 3}]}
    parsed = parse_manifest(json.dumps(m).encode())
    assert parsed.layers[0].size == 3
    m["layers"][0]["mediaType"] = "application/x-evil"
    with pytest.raises(InvalidArgument):
        parse_manifest(json.dumps(m).encode())
    m["layers"][0] = {"digest": "sha256:nothex", "size": 1}
    with pytest.raises(InvalidArgument):
        parse_manifest(json.dumps(m).encode())
    with pytest.raises(InvalidArgument) as exc:
        detect_media_type(json.dumps({"schemaVersion": 1}).encode())
    assert "schema 1" in str(exc.value)
    with pytest.raises(InvalidArgument):
        detect_media_type(b"not json")


def test_image_config_and_user_fields():
    cfg = ImageConfig.parse(json.dumps({
        "rootfs": {"type": "layers", "diff_ids": [H]},
        "config": {"User": "www-data:www-data", "Env": ["A=1"], "Entrypoint": ["/e"],
                   "Cmd": ["c"], "WorkingDir": "/w", "StopSignal": "SIGQUIT",
                   "Volumes": {"/b": {}, "/a": {}}}}).encode())
    assert (cfg.user, cfg.env, cfg.entrypoint, cfg.cmd, cfg.working_dir, cfg.stop_signal,
            cfg.volumes) == ("www-data:www-data", ["A=1"], ["/e"], ["c"], "/w", "SIGQUIT",
                             ["/a", "/b"])
    assert user_fields("1000:1000") == (1000, "")
    assert user_fields("www-data") == (None, "www-data")
    assert user_fields("") == (None, "")
    with pytest.raises(InvalidArgument):
        ImageConfig.parse(b'{"rootfs": {}}')


def test_chain_ids_follow_the_oci_formula():
    import hashlib
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a]) == [a]
    want = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b]) == [a, want]


def test_token_endpoint_answer_is_size_limited():
    """The realm is chosen by the registry: a huge answer must not be read into memory."""
    import httpx
    import pytest

    from imageservice.auth import MAX_TOKEN_RESPONSE, Credentials, fetch_token
    from pycri_common.errors import Unavailable

    def handler(request: httpx.Request) -> httpx.Response:
        big = b'{"token": "' + b"a" * (MAX_TOKEN_RESPONSE + 10) + b'"}'
        return httpx.Response(200, content=big)
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(Unavailable, match="more than"):
            fetch_token(client, {"realm": "http://127.0.0.1:1/token"}, "repository:a:pull",
                        Credentials("u", "p"), httpx.Timeout(5))

    def small(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"].startswith("Basic ")
        return httpx.Response(200, json={"token": "t0k"})
    with httpx.Client(transport=httpx.MockTransport(small)) as client:
        assert fetch_token(client, {"realm": "http://127.0.0.1:1/token"}, "repository:a:pull",
                           Credentials("u", "p"), httpx.Timeout(5)) == "t0k"
