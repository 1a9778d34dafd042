"""Run one container through runtime.container_init without shim or daemon (test helper).

Run as a separate process (pytest may have threads; the init must be forked from a
single-threaded parent):  python3 -m tests.support.init_runner < request.json > result.json

request: {"spec": ContainerSpec, "start": true, "timeout": 20,
          "exec": [process, ...] (run with exec_into while the container runs, then the
          container is SIGKILLed), "hold_file": path (optional: written once the container
          is started, the runner then waits for the container to exit)}
result:  {"reports": [...], "exec_reports": [[...]], "exit_code": int|null, "signal": int|null,
          "stdout": str, "stderr": str, "exec_results": [{"exit_code", "stdout", "stderr"}],
          "init_ms": fork -> ready in ms, "oom_kill_count": int, "pid": int}
The runner is a child subreaper (like the shim) and removes the container cgroup at the end.
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import tempfile
import time
from typing import Any

from pycri_common.errors import PycriError
from runtime import cgroups, syscalls
from runtime.capability_names import capabilities_to_mask
from runtime.container_init import exec_into, run
from runtime.container_spec import ContainerSpec


def _read_reports(fd: int, until: tuple[str, ...], timeout: float) -> list[dict[str, Any]]:
    """JSON lines from fd until a message with a key in `until`, or EOF."""
    out: list[dict[str, Any]] = []
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            out.append(msg)
            if any(k in msg for k in until):
                return out
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            out.append({"runner_timeout": True})
            return out
        data = os.read(fd, 65536)
        if not data:
            return out
        buf += data


_REAPED: dict[int, int] = {}


def _wait_pid(pid: int, timeout: float) -> int | None:
    """Reap children until `pid` exits; returns its wait status (None on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if pid in _REAPED:
            return _REAPED.pop(pid)
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if got:
            _REAPED[got] = status
            continue
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.002)


def _status(status: int | None) -> tuple[int | None, int | None]:
    if status is None:
        return None, None
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def main() -> None:
    req = json.load(sys.stdin)
    spec_json = req["spec"]
    timeout = float(req.get("timeout", 20))
    syscalls.set_child_subreaper(True)
    tmp = tempfile.mkdtemp(prefix="init-runner-")
    out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT, 0o644)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o644)
    null_fd = os.open("/dev/null", os.O_RDONLY)
    gate_r, gate_w = os.pipe()
    rep_r, rep_w = os.pipe()
    result: dict[str, Any] = {"exec_results": [], "exec_reports": []}
    t0 = time.monotonic()
    child = os.fork()
    if child == 0:
        os.close(gate_w)
        os.close(rep_r)
        try:  # the shim's parse (runtime.shim.containers), reported as the init would
            spec = ContainerSpec.from_json(spec_json)
        except PycriError as e:
            os.write(rep_w, json.dumps({"error": str(e), "kind": e.kind}).encode() + b"\n")
            os._exit(1)
        run(spec, (null_fd, out_fd, err_fd), gate_r, rep_w)
    os.close(gate_r)
    os.close(rep_w)
    reports = _read_reports(rep_r, ("ready", "error"), timeout)
    result["init_ms"] = (time.monotonic() - t0) * 1000
    pid = next((m["pid"] for m in reports if "pid" in m), child)
    result["pid"] = pid
    if req.get("probe_exe_at_gate") and reports and "ready" in reports[-1]:
        result["probe_exe"] = _probe_exe(pid, spec_json)
    if reports and "ready" in reports[-1] and req.get("start", True):
        os.write(gate_w, b"s")
        os.close(gate_w)
        reports += _read_reports(rep_r, ("error",), timeout)
        if req.get("hold_file"):
            with open(req["hold_file"], "w") as f:
                f.write(str(pid))
        for proc in req.get("exec", []):
            result["exec_results"].append(_exec(pid, ContainerSpec.from_json(spec_json), proc,
                                                tmp, timeout, result))
        if req.get("exec"):
            os.kill(pid, signal.SIGKILL)
    else:
        os.close(gate_w)
    os.close(rep_r)
    result["reports"] = reports
    status = _wait_pid(pid, timeout)
    if status is None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = _wait_pid(pid, 5)
        result["timed_out"] = True
    _wait_pid(-2, 0.01)  # reap the intermediate process, if any
    result["exit_code"], result["signal"] = _status(status)
    result["stdout"], result["stderr"] = _read(out_path), _read(err_path)
    cg = spec_json.get("cgroup")
    if cg:
        path = cgroups.spec_cgroup_path(cg)
        result["oom_kill_count"] = cgroups.oom_kill_count(path)
        cgroups.remove_cgroup(path)
    for path in (out_path, err_path):
        os.unlink(path)
    os.rmdir(tmp)
    json.dump(result, sys.stdout)


def _probe_exe(pid: int, spec: dict[str, Any]) -> str:
    """What a root process of the container (same uid, same capabilities) can do to the init
    waiting at its gate: readlink /proc/<pid>/exe needs ptrace read access."""
    child = os.fork()
    if child == 0:
        try:
            mask = capabilities_to_mask(spec["process"]["capabilities"]["permitted"])
            syscalls.capset(syscalls.CapSets(mask, mask, 0))
            os.readlink(f"/proc/{pid}/exe")
            os._exit(0)
        except PermissionError:
            os._exit(1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _pid, status = os.waitpid(child, 0)
    return {0: "allowed", 1: "denied"}.get(os.waitstatus_to_exitcode(status), "error")


def _exec(pid: int, spec: ContainerSpec, proc: dict[str, Any], tmp: str, timeout: float,
          result: dict[str, Any]) -> dict[str, Any]:
    out_path, err_path = os.path.join(tmp, "xout"), os.path.join(tmp, "xerr")
    out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null_fd = os.open("/dev/null", os.O_RDONLY)
    rep_r, rep_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(rep_r)
        exec_into(pid, spec, proc, (null_fd, out_fd, err_fd), rep_w)
    for fd in (rep_w, out_fd, err_fd, null_fd):
        os.close(fd)
    reports = _read_reports(rep_r, ("error",), timeout)
    os.close(rep_r)
    result["exec_reports"].append(reports)
    xpid = next((m["pid"] for m in reports if "pid" in m), child)
    code, _sig = _status(_wait_pid(xpid, timeout))
    if xpid != child:
        _wait_pid(child, 1)
    res = {"exit_code": code, "stdout": _read(out_path), "stderr": _read(err_path)}
    os.unlink(out_path)
    os.unlink(err_path)
    return res


if __name__ == "__main__":
    main()
