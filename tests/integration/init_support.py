"""Helpers for the container-init tests: a busybox lower layer, specs, and running the init
through tests/support/init_runner.py in a separate (single-threaded) process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Any

from runtime import container_spec as cs
from runtime.capability_names import capabilities_to_mask
from runtime.seccomp import runtime_default_profile

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALL_NS = ("ipc", "uts", "pid", "mount", "cgroup", "network")


def _spec_json(obj: Any) -> Any:
    """json.dumps hook: ContainerSpec parts (Mount, Capabilities...) as their JSON form, so a
    test can put them into a spec dict as they come from runtime.container_spec."""
    to_json = getattr(obj, "to_json", None)
    if to_json is None:
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")
    return to_json()


class Box:
    """A per-test container directory (upper/work/mountpoint) on top of the shared lower."""

    def __init__(self, lower: str, cgroup_parent: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="pycri-init-")
        self.lower = lower
        self.cgroup_parent = cgroup_parent
        for d in ("upper", "work"):
            os.mkdir(os.path.join(self.dir, d))
        self.id = uuid.uuid4().hex[:12]

    def spec(self, args: list[str], **over: Any) -> dict[str, Any]:
        """A default (kubelet-like, unprivileged) spec; keyword args override top-level keys
        or, prefixed with process_, process keys."""
        privileged = over.pop("privileged", False)
        caps = over.pop("process_capabilities", None) or cs.compute_capabilities(
            privileged=privileged)
        process = {
            "args": args, "env": ["PATH=/bin", "FOO=bar"], "cwd": "/",
            "user": {"uid": 0}, "capabilities": caps, "no_new_privs": True,
            "oom_score_adj": None,
        }
        for key in list(over):
            if key.startswith("process_"):
                process[key[len("process_"):]] = over.pop(key)
        spec: dict[str, Any] = {
            "id": self.id, "pod_id": "pod1",
            "rootfs": {"lower": [self.lower], "upper": os.path.join(self.dir, "upper"),
                       "work": os.path.join(self.dir, "work"), "readonly": False},
            "process": process,
            "namespaces": [{"type": t, "path": None} for t in ALL_NS],
            "hostname": "ctr",
            "mounts": cs.default_mounts(privileged),
            "masked_paths": [] if privileged else cs.default_masked_paths(),
            "readonly_paths": [] if privileged else cs.default_readonly_paths(),
            "privileged": privileged,
            "seccomp": None if privileged else runtime_default_profile(list(caps.bounding)),
            "cgroup": {"driver": "cgroupfs", "path": f"{self.cgroup_parent}/{self.id}",
                       "resources": {}},
        }
        spec.update(over)
        return spec

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def run_init(spec: dict[str, Any], start: bool = True, timeout: float = 20,
             **extra: Any) -> dict[str, Any]:
    req = {"spec": spec, "start": start, "timeout": timeout, **extra}
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    proc = subprocess.run([sys.executable, "-m", "tests.support.init_runner"],
                          input=json.dumps(req, default=_spec_json), capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT, timeout=timeout + 15, check=False)
    assert proc.returncode == 0, f"runner failed: {proc.stderr}"
    return json.loads(proc.stdout)


def start_init(spec: dict[str, Any], timeout: float = 20, **extra: Any) -> subprocess.Popen[str]:
    """The runner in the background (for tests that act on the host while it runs)."""
    req = {"spec": spec, "start": True, "timeout": timeout, **extra}
    env = dict(os.environ, PYTHONPATH=PROJECT_ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.init_runner"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(req, default=_spec_json))
    proc.stdin.close()
    return proc


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    assert proc.stdout is not None and proc.stderr is not None
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout)
    assert proc.returncode == 0, f"runner failed: {err}"
    return json.loads(out)


def ok(result: dict[str, Any]) -> str:
    """Container stdout after asserting it got ready and exited 0."""
    assert any("ready" in m for m in result["reports"]), result
    assert result["exit_code"] == 0, result
    return str(result["stdout"])


def error_of(result: dict[str, Any]) -> dict[str, Any]:
    errors = [m for m in result["reports"] if "error" in m]
    assert errors, result
    return errors[0]


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {text!r}")


def cap_hex(names: list[str]) -> str:
    return f"{capabilities_to_mask(names):016x}"


def is_mountpoint(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)
