"""RuntimeDefault seccomp data, Localhost profiles, rlimit/oom clamping, AppArmor choice."""
from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime import apparmor, rlimits, seccomp
from runtime.container_spec import default_capabilities


def _allowed(profile: dict[str, object]) -> set[str]:
    names: set[str] = set()
    for rule in profile["syscalls"]:  # type: ignore[attr-defined]
        if rule["action"] == "SCMP_ACT_ALLOW":
            names.update(rule["names"])
    return names


def test_runtime_default_is_an_allow_list() -> None:
    prof = seccomp.runtime_default_profile(default_capabilities(), machine="x86_64")
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == 1
    assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    allowed = _allowed(prof)
    assert {"read", "write", "execve", "chroot", "arch_prctl", "clone"} <= allowed
    for blocked in ("keyctl", "add_key", "request_key", "unshare", "mount", "setns", "bpf",
                    "reboot", "init_module", "kexec_load", "open_by_handle_at", "acct"):
        assert blocked not in allowed, blocked
    clone = [r for r in prof["syscalls"] if r["names"] == ["clone"]]
    assert clone[0]["args"][0]["op"] == "SCMP_CMP_MASKED_EQ"  # no namespace flags
    assert any(r["names"] == ["clone3"] and r["errnoRet"] == 38 for r in prof["syscalls"])


def test_runtime_default_depends_on_caps_and_arch() -> None:
    admin = _allowed(seccomp.runtime_default_profile(
        [*default_capabilities(), "CAP_SYS_ADMIN", "CAP_SYS_TIME"], machine="x86_64"))
    assert {"mount", "unshare", "setns", "clone3", "settimeofday"} <= admin
    no_chroot = _allowed(seccomp.runtime_default_profile(["CAP_CHOWN"], machine="aarch64"))
    assert "chroot" not in no_chroot and "arch_prctl" not in no_chroot
    assert "cacheflush" in no_chroot


def test_data_file_is_valid_json_with_comment() -> None:
    with open(seccomp.DATA_FILE) as f:
        data = json.load(f)
    assert "pycri" in data["comment"]
    for rule in data["syscalls"]:
        assert rule["action"].startswith("SCMP_ACT_") and rule["names"]


def test_localhost_profile(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW"}))
    assert seccomp.load_localhost_profile(str(good))["defaultAction"] == "SCMP_ACT_ALLOW"
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(InvalidArgument, match=r"bad\.json"):
        seccomp.load_localhost_profile(str(bad))
    with pytest.raises(InvalidArgument, match=r"missing\.json"):
        seccomp.load_localhost_profile(str(tmp_path / "missing.json"))


def test_filter_compiles_and_rejects_bad_actions() -> None:
    f = seccomp.SeccompFilter(seccomp.runtime_default_profile(default_capabilities()))
    f.release()
    with pytest.raises(InvalidArgument, match="unsupported action"):
        seccomp.SeccompFilter({"defaultAction": "SCMP_ACT_FOO"})
    with pytest.raises(InvalidArgument, match=r"syscalls\[0\].args\[0\]"):
        seccomp.SeccompFilter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0,
                                                                     "op": "SCMP_CMP_XX"}]}]})


def test_rlimit_and_oom_clamps() -> None:
    inf = resource.RLIM_INFINITY
    assert rlimits.clamp_rlimit(1024, 10**9, 20000) == (1024, 20000)
    assert rlimits.clamp_rlimit(30000, 10**9, 20000) == (20000, 20000)
    assert rlimits.clamp_rlimit(inf, inf, inf) == (inf, inf)
    assert rlimits.clamp_rlimit(5, inf, 100) == (5, 100)
    assert rlimits.clamp_oom_score_adj(-500, 0) == 0
    assert rlimits.clamp_oom_score_adj(500, 0) == 500


def test_apparmor_resolution(tmp_path: Path) -> None:
    absent = str(tmp_path / "none")
    assert apparmor.resolve_profile(None, absent) is None
    assert apparmor.resolve_profile("unconfined", absent) is None
    assert apparmor.resolve_profile("runtime/default", absent) is None
    with pytest.raises(InvalidArgument, match="not enabled"):
        apparmor.resolve_profile("localhost/foo", absent)
    present = tmp_path / "aa"
    present.mkdir()
    (present / "profiles").write_text("foo (enforce)\npycri-default (enforce)\n")
    assert apparmor.resolve_profile("localhost/foo", str(present)) == "foo"
    assert apparmor.resolve_profile("runtime/default", str(present)) == "pycri-default"
    with pytest.raises(InvalidArgument, match="not loaded"):
        apparmor.resolve_profile("localhost/bar", str(present))
    # enabled but the default profile is not loaded: an error, never silently unconfined
    (present / "profiles").write_text("foo (enforce)\n")
    with pytest.raises(InvalidArgument, match="'pycri-default' is not loaded"):
        apparmor.resolve_profile("runtime/default", str(present))


def test_apparmor_default_profile_loading(tmp_path: Path) -> None:
    text = apparmor.default_profile_text()
    assert text.count("profile pycri-default ") == 1 and "deny mount," in text
    assert apparmor.ensure_default_profile(str(tmp_path / "none")) is False  # AppArmor off
    present = tmp_path / "aa"
    present.mkdir()
    (present / "profiles").write_text("pycri-default (enforce)\n")
    assert apparmor.ensure_default_profile(str(present), parser="no-such-parser") is True
    (present / "profiles").write_text("")
    with pytest.raises(FailedPrecondition, match="no-such-parser is missing"):
        apparmor.ensure_default_profile(str(present), parser="no-such-parser")
    fake = tmp_path / "fake_parser"   # records what it was given, as apparmor_parser -K -r
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args; cat > {tmp_path}/stdin\n")
    fake.chmod(0o755)
    assert apparmor.ensure_default_profile(str(present), parser=str(fake)) is True
    assert (tmp_path / "args").read_text().split() == ["-K", "-r"]
    assert (tmp_path / "stdin").read_text() == text
    fake.write_text("#!/bin/sh\necho 'syntax error' >&2; exit 1\n")
    with pytest.raises(FailedPrecondition, match="syntax error"):
        apparmor.ensure_default_profile(str(present), parser=str(fake))


def test_compiled_filters_are_cached_by_content() -> None:
    prof = seccomp.runtime_default_profile(default_capabilities())
    first = seccomp.compiled(prof)
    assert seccomp.compiled(json.loads(json.dumps(prof))) is first
    other = seccomp.compiled({"defaultAction": "SCMP_ACT_ALLOW"})
    assert other is not first


def test_a_compiled_filter_carries_its_bpf_program_and_loads_it_in_a_child() -> None:
    """The program is generated at compile time (in the shim) and kept: a forked child
    loads those bytes (prctl), no libseccomp generation; the child's filter is real (a
    syscall the profile denies fails with its errno)."""
    import errno
    import os

    from runtime import syscalls
    f = seccomp.compiled({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EROFS}]})
    program = f.program()
    assert program and len(program) % 8 == 0 and f.program() is program
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            f.load()
            try:
                os.getcwd()
                os.write(w, b"allowed")
            except OSError as e:
                os.write(w, str(e.errno).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == str(errno.EROFS).encode()
    with pytest.raises(ValueError):
        syscalls.load_seccomp_program(b"\0" * 7)
