"""cri_server.containers.security.apparmor_profile: which profile a container asks for (host
without AppArmor here; tests/vm checks the enforcement on a kernel that has it)."""
from __future__ import annotations

import pytest

from cri_server.containers import security
from proto import api_pb2
from pycri_common.errors import InvalidArgument
from runtime import apparmor

SP = api_pb2.SecurityProfile


def _sc(field: api_pb2.SecurityProfile | None = None, legacy: str = "",
        privileged: bool = False) -> api_pb2.LinuxContainerSecurityContext:
    sc = api_pb2.LinuxContainerSecurityContext(apparmor_profile=legacy, privileged=privileged)
    if field is not None:
        sc.apparmor.CopyFrom(field)
    return sc


@pytest.fixture(autouse=True)
def no_apparmor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apparmor, "APPARMOR_DIR", "/nonexistent-apparmor")
    monkeypatch.setattr(apparmor.resolve_profile, "__defaults__", ("/nonexistent-apparmor",))
    monkeypatch.setattr(apparmor.ensure_default_profile, "__defaults__",
                        ("/nonexistent-apparmor", apparmor.PARSER))


def test_selection_and_precedence() -> None:
    assert security.apparmor_profile(_sc()) == "runtime/default"          # nothing said
    assert security.apparmor_profile(_sc(SP(profile_type=SP.RuntimeDefault))) == "runtime/default"
    assert security.apparmor_profile(_sc(legacy="runtime/default")) == "runtime/default"
    assert security.apparmor_profile(_sc(SP(profile_type=SP.Unconfined))) is None
    assert security.apparmor_profile(_sc(legacy="unconfined")) is None
    assert security.apparmor_profile(_sc(privileged=True)) is None
    # the new field wins over the deprecated one
    assert security.apparmor_profile(_sc(SP(profile_type=SP.Unconfined),
                                         legacy="localhost/x")) is None


@pytest.mark.parametrize("ref", ["my-profile", "localhost/my-profile"])
def test_localhost_ref_names_the_profile(ref: str) -> None:
    with pytest.raises(InvalidArgument, match="profile 'my-profile' requested but AppArmor"):
        security.apparmor_profile(_sc(SP(profile_type=SP.Localhost, localhost_ref=ref)))
