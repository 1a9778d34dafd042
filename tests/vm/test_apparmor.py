"""AppArmor for real (VM leg: the guest kernel enforces AppArmor): pycri's default profile is
loaded and confines RuntimeDefault containers and their exec'd processes; Localhost profiles
must be loaded; Unconfined is unconfined; `apparmor` wins over `apparmor_profile`."""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from proto import api_pb2
from runtime import apparmor
from tests.support.containers import ContainerEnv
from tests.support.daemon import PycriDaemon

SP = api_pb2.SecurityProfile
DENY_WRITE = "pycri-test-deny-write"
MOUNT = "mkdir -p /m && mount -t tmpfs t /m 2>&1 && echo mounted && umount /m"

pytestmark = pytest.mark.usefixtures("apparmor_host")


@pytest.fixture(scope="module")
def env(daemon: PycriDaemon) -> Iterator[ContainerEnv]:
    apparmor.load_profile(f"profile {DENY_WRITE} flags=(attach_disconnected) {{\n"
                          "  file,\n  deny /** w,\n}\n")
    try:
        with ContainerEnv(daemon.c) as e:
            yield e
    finally:
        subprocess.run(["apparmor_parser", "-R"], input=f"profile {DENY_WRITE} {{}}\n".encode(),
                       check=True, capture_output=True)


def _linux(apparmor_field: api_pb2.SecurityProfile | None = None, legacy: str = "",
           caps: list[str] | None = None) -> api_pb2.LinuxContainerConfig:
    sc = api_pb2.LinuxContainerSecurityContext(
        apparmor_profile=legacy,
        capabilities=api_pb2.Capability(add_capabilities=caps or []))
    if apparmor_field is not None:
        sc.apparmor.CopyFrom(apparmor_field)
    return api_pb2.LinuxContainerConfig(security_context=sc)


def _label(env: ContainerEnv, linux: api_pb2.LinuxContainerConfig) -> str:
    return env.output(["cat", "/proc/self/attr/current"], linux=linux).strip()


def test_status_says_apparmor_is_enabled(env: ContainerEnv) -> None:
    info = env.cri.Status(api_pb2.StatusRequest(verbose=True)).info
    assert json.loads(info["apparmor"]) == {"enabled": True, "defaultProfile": "pycri-default",
                                            "defaultProfileLoaded": True}


def test_runtime_default_confines_containers_and_exec(env: ContainerEnv) -> None:
    enforce = "pycri-default (enforce)"
    assert _label(env, _linux(SP(profile_type=SP.RuntimeDefault))) == enforce
    assert _label(env, _linux()) == enforce            # nothing said: RuntimeDefault
    assert _label(env, _linux(legacy="runtime/default")) == enforce
    # the profile takes away mount even from a container given CAP_SYS_ADMIN
    denied = env.output(["sh", "-c", MOUNT + "; true"],
                        linux=_linux(SP(profile_type=SP.RuntimeDefault), caps=["SYS_ADMIN"]))
    assert "mounted" not in denied and "denied" in denied, denied
    allowed = env.output(["sh", "-c", MOUNT],
                         linux=_linux(SP(profile_type=SP.Unconfined), caps=["SYS_ADMIN"]))
    assert allowed == "mounted\n"
    cid = env.run(["sleep", "1000"], linux=_linux(SP(profile_type=SP.RuntimeDefault)))
    try:
        r = env.exec_sync(cid, ["cat", "/proc/self/attr/current"])
        assert (r.exit_code, r.stdout.decode().strip()) == (0, enforce)
    finally:
        env.remove(cid)


def test_localhost_unconfined_and_precedence(env: ContainerEnv) -> None:
    write = ["sh", "-c", "echo x > /tmp/f && echo wrote || echo refused"]
    local = SP(profile_type=SP.Localhost, localhost_ref=DENY_WRITE)
    assert env.output(write, linux=_linux(local)) == "refused\n"
    # kubelet's form of the reference: "localhost/<name>"
    prefixed = SP(profile_type=SP.Localhost, localhost_ref=f"localhost/{DENY_WRITE}")
    assert env.output(write, linux=_linux(prefixed)) == "refused\n"
    assert env.output(write, linux=_linux(legacy=f"localhost/{DENY_WRITE}")) == "refused\n"
    # the new field wins over the deprecated one
    assert env.output(write, linux=_linux(SP(profile_type=SP.Unconfined),
                                          legacy=f"localhost/{DENY_WRITE}")) == "wrote\n"
    assert _label(env, _linux(SP(profile_type=SP.Unconfined))) == "unconfined"
    with pytest.raises(grpc.RpcError) as err:
        env.create(env.config(["true"], linux=_linux(
            SP(profile_type=SP.Localhost, localhost_ref="pycri-test-never-loaded"))))
    assert "pycri-test-never-loaded" in str(err.value.details())
    assert "not loaded" in str(err.value.details())
