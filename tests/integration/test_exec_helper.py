"""The exec helper (runtime/exec_helper): ExecSync's process goes through pycri-exec, and
what it runs with is exactly what the container's own process has (user, groups,
capabilities, no_new_privs, seccomp, namespaces, cgroups, oom_score_adj, environment); its
failures read as the Python path's did."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from runtime import exec_helper
from tests.support.containers import ContainerEnv

TRACING = Path("/sys/kernel/tracing")
EXEC_EVENT = TRACING / "events" / "sched" / "sched_process_exec"
_STATUS_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                  "NoNewPrivs", "Seccomp")
_NAMESPACES = ("ipc", "uts", "net", "cgroup", "mnt", "pid")


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        yield e


@pytest.fixture(scope="module")
def confined(env: ContainerEnv) -> str:
    """A container with a user, supplementary groups, capabilities added and dropped, the
    runtime's seccomp profile and no_new_privs."""
    sc = api_pb2.LinuxContainerSecurityContext(
        run_as_user=api_pb2.Int64Value(value=33), run_as_group=api_pb2.Int64Value(value=44),
        supplemental_groups=[5, 77], no_new_privs=True,
        capabilities=api_pb2.Capability(add_capabilities=["NET_ADMIN"],
                                        drop_capabilities=["CHOWN", "KILL"]),
        seccomp=api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault))
    return env.run(["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"],
                   envs=[api_pb2.KeyValue(key="CTR_ENV", value=b"yes")], working_dir="/tmp",
                   linux=api_pb2.LinuxContainerConfig(security_context=sc))


@pytest.fixture
def exec_trace() -> Iterator[Path]:
    """The kernel's sched_process_exec tracepoint (one line per execve), on for the test."""
    mounted = False
    if not (TRACING / "trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
        mounted = True
    assert EXEC_EVENT.is_dir(), "this kernel has no sched tracepoints"
    was_on = (TRACING / "tracing_on").read_text().strip()
    (TRACING / "trace").write_text("")
    (EXEC_EVENT / "enable").write_text("1")
    (TRACING / "tracing_on").write_text("1")
    try:
        yield TRACING / "trace"
    finally:
        (EXEC_EVENT / "enable").write_text("0")
        (TRACING / "tracing_on").write_text(was_on)
        (TRACING / "trace").write_text("")
        if mounted:
            subprocess.run(["umount", str(TRACING)], check=False)


def _fields(status: str) -> dict[str, str]:
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in _STATUS_FIELDS:
            out[key] = " ".join(value.split())
    return out


def test_exec_sync_goes_through_the_helper(env: ContainerEnv, confined: str,
                                           exec_trace: Path) -> None:
    assert env.exec_sync(confined, ["true"]).exit_code == 0
    execs = [line for line in exec_trace.read_text().splitlines() if "sched_process_exec" in line]
    helper = exec_helper.binary()
    at = next(i for i, line in enumerate(execs) if f"filename={helper} " in line)
    pid = execs[at].split("pid=")[1].split()[0]
    # the same process execs the command next
    assert any(f" pid={pid} " in line and "filename=/bin/true" in line for line in execs[at:])


def test_an_exec_runs_as_the_container_process_does(env: ContainerEnv, confined: str) -> None:
    script = ("cat /proc/self/status; echo --; cat /proc/1/status; echo --; "
              "for n in " + " ".join(_NAMESPACES) + "; do readlink /proc/self/ns/$n; done; "
              "echo --; for n in " + " ".join(_NAMESPACES) + "; do readlink /proc/1/ns/$n; "
              "done; echo --; cat /proc/self/cgroup; echo --; cat /proc/1/cgroup; echo --; "
              "cat /proc/self/oom_score_adj /proc/1/oom_score_adj; echo --; pwd; "
              "echo $CTR_ENV $HOME")
    r = env.exec_sync(confined, ["sh", "-c", script])
    assert r.exit_code == 0, r.stderr
    mine, init, my_ns, init_ns, my_cg, init_cg, oom, rest = r.stdout.decode().split("--\n")
    assert _fields(mine) == _fields(init), (mine, init)
    assert _fields(mine)["Uid"].split()[0] == "33" and _fields(mine)["Gid"].split()[0] == "44"
    assert set(_fields(mine)["Groups"].split()) >= {"5", "77"}
    assert _fields(mine)["NoNewPrivs"] == "1" and _fields(mine)["Seccomp"] == "2"
    assert my_ns == init_ns and my_cg == init_cg
    assert len(set(oom.split())) == 1
    assert rest.split() == ["/tmp", "yes", "/var/www"]   # www-data's home, from /etc/passwd


def test_exec_failures_read_as_before(env: ContainerEnv, confined: str) -> None:
    for cmd, words in ((["/no/such/cmd"], ["/no/such/cmd", "not found"]),
                       (["no-such-cmd"], ["no-such-cmd", "not found in $PATH"]),
                       (["/tmp"], ["'/tmp'", "not an executable file"])):
        try:
            r = env.exec_sync(confined, cmd)
        except grpc.RpcError as e:
            assert all(w in (e.details() or "") for w in words), (cmd, e.details())
        else:
            pytest.fail(f"{cmd} ran: {r}")


def test_the_helper_starts_without_a_fork_in_its_cgroup() -> None:
    """exec_helper.spawn (vspawn.c: clone3 CLONE_VM|CLONE_VFORK|CLONE_INTO_CGROUP): the
    helper is born in the cgroup of the unified hierarchy, runs its plan and the command on
    the fds given, reports ready, and the pipe reaches EOF at the command's execve."""
    import json
    import os

    from runtime.cgroups.mode import unified_root
    from runtime.container_init import merge_exec_process
    from runtime.container_spec import ContainerSpec, compute_capabilities
    root = unified_root()
    if root is None:
        pytest.fail("no unified hierarchy on this host")
    name = f"pycri-test-vspawn-{os.getpid()}"
    os.mkdir(os.path.join(root, name))
    sleeper = subprocess.Popen(["sleep", "30"])
    r, w = os.pipe2(os.O_CLOEXEC)
    rep_r, rep_w = os.pipe2(os.O_CLOEXEC)
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    pid = None
    try:
        spec = ContainerSpec.from_json({
            "id": "c", "pod_id": "p", "rootfs": {"lower": ["/l"], "upper": "/c/u", "work": "/c/w"},
            "process": {"args": ["sh"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/",
                        "capabilities": compute_capabilities().to_json()}, "cgroup": None})
        proc = merge_exec_process(spec.process, {"args": [
            "sh", "-c", "grep '^0::' /proc/self/cgroup; echo $HOME; grep SigBlk /proc/self/status"]})
        plan = exec_helper.prepare(sleeper.pid, spec, proc, own_user=False,
                                   user={"uid": 0, "gid": 0, "groups": [0]}, home="/nowhere")
        assert plan is not None
        try:
            pid = exec_helper.spawn(plan, (null, w, w), rep_w, "/" + name)
        finally:
            plan.close()
        assert pid is not None and pid > 0
        os.close(w)
        os.close(rep_w)
        w = rep_w = -1
        report = b""
        while chunk := os.read(rep_r, 4096):
            report += chunk
        assert json.loads(report) == {"ready": True, "user": {"uid": 0, "gid": 0, "groups": [0]}}
        out = b""
        while chunk := os.read(r, 4096):
            out += chunk
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, out
        assert out.decode().split() == [f"0::/{name}", "/nowhere", "SigBlk:", "0000000000000000"]
    finally:
        for fd in (r, w, rep_r, rep_w, null):
            if fd >= 0:
                os.close(fd)
        sleeper.kill()
        sleeper.wait()
        os.rmdir(os.path.join(root, name))
