"""runtime.exec_helper.prepare: the plan the shim hands to pycri-exec, and when there is
none (the Python path runs). The helper's side is tested through real execs
(tests/integration/test_exec_helper.py)."""
from __future__ import annotations

import json
import os

import pytest

from runtime import container_spec, exec_helper
from runtime.container_init import merge_exec_process
from runtime.container_spec import ContainerSpec

USER = {"uid": 33, "gid": 44, "groups": [5, 77]}


def _spec(**over: object) -> ContainerSpec:
    obj = {
        "id": "c", "pod_id": "p", "rootfs": {"lower": ["/l"], "upper": "/c/u", "work": "/c/w"},
        "process": {"args": ["sh"], "env": ["PATH=/usr/bin:/bin", "A=1"], "cwd": "/tmp",
                    "capabilities": container_spec.compute_capabilities().to_json(),
                    "no_new_privs": True, "oom_score_adj": 5,
                    "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096}]},
        "seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}]},
        "cgroup": None, **over}
    return ContainerSpec.from_json(obj)


def _records(plan: exec_helper.Plan) -> list[str]:
    data = os.pread(plan.memfd, 1 << 20, 0)
    return data.decode().split("\0")[:-1]


def test_the_plan_holds_every_step_in_order() -> None:
    spec = _spec()
    proc = merge_exec_process(spec.process, {"args": ["echo", "a b"], "tty": False})
    plan = exec_helper.prepare(os.getpid(), spec, proc, own_user=False, user=USER, home="/h")
    assert plan is not None
    try:
        recs = _records(plan)
        assert plan.ns_fds == []   # our own namespaces: nothing to join
        keys = [r.split("=", 1)[0] for r in recs]
        assert keys.index("rlimit") < keys.index("oom") < keys.index("cwd") < keys.index("seccomp")
        assert f"rlimit={__import__('resource').RLIMIT_NOFILE} 1024 4096" in recs
        assert "oom=5" in recs and "cwd=/tmp" in recs and "path=/usr/bin:/bin" in recs
        assert "seccomp_late=1" in recs and "nnp=1" in recs   # no_new_privs: after the creds
        assert [r for r in recs if r.startswith(
            ("uid=", "gid=", "groups="))] == ["uid=33", "gid=44", "groups=5,77"]
        assert [r for r in recs if r.startswith("arg=")] == ["arg=echo", "arg=a b"]
        assert [r for r in recs if r.startswith("env=")] == [
            "env=PATH=/usr/bin:/bin", "env=A=1", "env=HOME=/h"]
        ready = json.loads(next(r for r in recs if r.startswith("ready="))[6:])
        assert ready == {"ready": True, "user": USER}
    finally:
        memfd = plan.memfd
        plan.close()
    with pytest.raises(OSError):
        os.fstat(memfd)


@pytest.mark.parametrize("case", ["own user", "no home", "no user", "userns"])
def test_no_plan_where_the_python_path_must_run(case: str) -> None:
    spec = _spec(userns={"path": "/run/pod/ns/user", "uid_map": [[0, 100000, 65536]],
                         "gid_map": [[0, 100000, 65536]]}) if case == "userns" else _spec()
    proc = merge_exec_process(spec.process, {"args": ["true"]})
    plan = exec_helper.prepare(os.getpid(), spec, proc, own_user=case == "own user",
                               user={} if case == "no user" else USER,
                               home=None if case == "no home" else "/h")
    assert plan is None


def test_a_gone_container_is_an_error_and_leaks_nothing() -> None:
    spec = _spec()
    proc = merge_exec_process(spec.process, {"args": ["true"]})
    before = sorted(os.listdir("/proc/self/fd"))
    from pycri_common.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match="is gone"):
        exec_helper.prepare(2 ** 22 + 1, spec, proc, own_user=False, user=USER, home="/h")
    assert sorted(os.listdir("/proc/self/fd")) == before
