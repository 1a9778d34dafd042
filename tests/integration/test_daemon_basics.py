"""The daemon foundation through the real socket: Version, Status, RuntimeConfig, errors."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import grpc
import pytest

from cri_server import __version__
from cri_server.servicer_base import rpc_names
from proto import api_pb2
from tests.support.cri_client import rpc_error
from tests.support.daemon import REPO_ROOT, PycriDaemon


def test_version(cri) -> None:  # type: ignore[no-untyped-def]
    v = cri.Version(api_pb2.VersionRequest(version="0.1.0"))
    assert v.version == "0.1.0"
    assert v.runtime_name == "pycri"
    assert v.runtime_version == __version__
    assert v.runtime_api_version == "v1"


def test_status_plain(cri) -> None:  # type: ignore[no-untyped-def]
    resp = cri.Status(api_pb2.StatusRequest())
    conditions = {c.type: c for c in resp.status.conditions}
    assert set(conditions) == {"RuntimeReady", "NetworkReady"}
    assert conditions["RuntimeReady"].status is True
    net = conditions["NetworkReady"]
    if not net.status:
        assert net.reason and net.message, "a not-ready network must say why"
    assert dict(resp.info) == {}
    names = [h.name for h in resp.runtime_handlers]
    assert names[0] == "" and "pycri" in names
    assert all(h.features.recursive_read_only_mounts for h in resp.runtime_handlers)
    # User namespaces: what the start-up probe found, the same for every handler (and said in
    # verbose info; test_user_namespaces.py runs pods with them on this host).
    verbose = json.loads(cri.Status(api_pb2.StatusRequest(verbose=True)).info["userNamespaces"])
    assert {h.features.user_namespaces for h in resp.runtime_handlers} == {verbose["supported"]}
    assert resp.features.supplemental_groups_policy is True


def test_status_verbose_info(cri, daemon) -> None:  # type: ignore[no-untyped-def]
    resp = cri.Status(api_pb2.StatusRequest(verbose=True))
    info = dict(resp.info)
    assert f'socket = "{daemon.socket}"' in info["config"]
    versions = json.loads(info["versions"])
    assert versions["pycri"] == __version__ and versions["grpcio"] == grpc.__version__
    assert info["cgroupVersion"] in ("v1", "v2")


def test_runtime_config_reports_cgroup_driver(cri) -> None:  # type: ignore[no-untyped-def]
    resp = cri.RuntimeConfig(api_pb2.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == api_pb2.CGROUPFS


def test_update_runtime_config_keeps_pod_cidr(cri) -> None:  # type: ignore[no-untyped-def]
    req = api_pb2.UpdateRuntimeConfigRequest(runtime_config=api_pb2.RuntimeConfig(
        network_config=api_pb2.NetworkConfig(pod_cidr="10.244.1.0/24")))
    cri.UpdateRuntimeConfig(req)
    info = dict(cri.Status(api_pb2.StatusRequest(verbose=True)).info)
    assert info["podCIDR"] == "10.244.1.0/24"
    bad = api_pb2.UpdateRuntimeConfigRequest(runtime_config=api_pb2.RuntimeConfig(
        network_config=api_pb2.NetworkConfig(pod_cidr="not-a-cidr")))
    err = rpc_error(cri.UpdateRuntimeConfig, bad)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "not-a-cidr" in err.details()
    assert dict(cri.Status(api_pb2.StatusRequest(verbose=True)).info)["podCIDR"] == "10.244.1.0/24"


def test_unimplemented_rpc_names_itself(cri) -> None:  # type: ignore[no-untyped-def]
    err = rpc_error(cri.CheckpointContainer, api_pb2.CheckpointContainerRequest(container_id="x"))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in err.details()


def test_every_rpc_answers_with_a_status_not_a_crash(cri) -> None:  # type: ignore[no-untyped-def]
    """Empty requests to every RPC get a proper gRPC answer (never UNKNOWN or a hang)."""
    for service in ("RuntimeService", "ImageService"):
        for name in rpc_names(service):
            request_cls = getattr(api_pb2, _request_type(service, name))
            if name == "GetContainerEvents":
                continue  # an open-ended stream; covered by the events tests
            try:
                result = cri.call(name, request_cls(), timeout=10)
                if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
                    for _ in result:
                        break
                    result.cancel()
            except grpc.RpcError as exc:
                assert exc.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED,
                                          grpc.StatusCode.INTERNAL), (name, exc.code(), exc.details())


def _request_type(service: str, method: str) -> str:
    desc = api_pb2.DESCRIPTOR.services_by_name[service].methods_by_name[method]
    return desc.input_type.name


def test_socket_is_0660(daemon) -> None:  # type: ignore[no-untyped-def]
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode) and mode == 0o660


def test_second_daemon_on_same_dirs_refuses(daemon) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, "-m", "cri_server", "serve", "--config",
                           str(daemon.config_file)], cwd=REPO_ROOT, check=False, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 1
    assert "already using" in proc.stderr and str(daemon.socket) in proc.stderr
    assert daemon.c.Version(api_pb2.VersionRequest()).runtime_name == "pycri"


def test_sigterm_shuts_down_and_removes_socket(fresh_daemon: PycriDaemon) -> None:
    fresh_daemon.start()
    assert fresh_daemon.socket.exists()
    assert fresh_daemon.stop() == 0
    assert not fresh_daemon.socket.exists()


def test_bad_config_refuses_to_start(fresh_daemon: PycriDaemon) -> None:
    fresh_daemon.config_file.write_text(fresh_daemon.config_file.read_text() + "\nbogus_key = 1\n")
    proc = subprocess.run([sys.executable, "-m", "cri_server", "serve", "--config",
                           str(fresh_daemon.config_file)], cwd=REPO_ROOT, check=False,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "bogus_key" in proc.stderr and str(fresh_daemon.config_file) in proc.stderr


def test_json_logs(fresh_daemon: PycriDaemon) -> None:
    fresh_daemon.config_file.write_text(fresh_daemon.config_file.read_text().replace(
        'log_level = "debug"', 'log_level = "debug"\nlog_format = "json"'))
    fresh_daemon.start()
    fresh_daemon.c.Version(api_pb2.VersionRequest())
    fresh_daemon.stop()
    records = [json.loads(line) for line in fresh_daemon.log_path.read_text().splitlines()
               if line.startswith("{")]
    assert any("rpc Version OK" in r["msg"] for r in records)
    assert all({"time", "level", "msg"} <= set(r) for r in records)


@pytest.mark.parametrize("argv", [["version"], ["config", "--root", "/srv/x"]])
def test_cli_commands(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "cri_server", *argv], cwd=REPO_ROOT, check=False,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    if argv[0] == "version":
        assert proc.stdout.startswith(f"pycri {__version__}")
    else:
        assert 'root = "/srv/x"' in proc.stdout
