"""Helpers for the shim tests: a busybox rootfs dir, a zygote, pods and container specs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from runtime import container_spec
from runtime.pod_spec import PodSpec
from runtime.shim_client import ShimClient
from runtime.zygote_client import ZygoteClient, ZygoteError, start_zygote

APPLETS = ("sh", "cat", "echo", "sleep", "hostname", "ls", "true", "false", "id", "printf",
           "head", "kill", "stty", "yes", "dd", "wc", "tr", "readlink")


def ldd_libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
                break
    return libs


def make_busybox_rootfs(root: str) -> str:
    """A minimal rootfs: /bin/busybox + its libraries + applet symlinks + /etc/passwd."""
    os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    shutil.copy2("/bin/busybox", os.path.join(root, "bin", "busybox"))
    for lib in ldd_libs("/bin/busybox"):
        dest = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dest)
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(root, "bin", applet))
    for d in ("etc", "tmp", "proc", "dev", "sys", "root"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return root


class ShimEnv:
    """A temp state dir (name contains 'pycri' so the leak check sees mounts), a zygote,
    and helpers to spawn pods; close() stops everything it started."""

    def __init__(self) -> None:
        self.base = tempfile.mkdtemp(prefix="pycri-shim-", dir="/tmp")
        env = dict(os.environ)
        root_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root_dir
        self.zygote: ZygoteClient = start_zygote(os.path.join(self.base, "state"), env=env)
        self.zygote_pid = self.zygote.ping()
        self.pods: dict[str, dict[str, Any]] = {}
        self._rootfs: str | None = None

    def pod_spec(self, pod_id: str, network: str = "pod", ipc: str = "pod",
                 pid: str = "container", sysctls: dict[str, str] | None = None,
                 hostname: str = "testpod") -> dict[str, Any]:
        return {"pod_id": pod_id, "hostname": hostname,
                "namespaces": {"network": network, "ipc": ipc, "pid": pid},
                "sysctls": sysctls or {},
                "shim_dir": os.path.join(self.base, "state", "shims", pod_id),
                "ns_dir": os.path.join(self.base, "state", "ns", pod_id),
                "cgroup": None, "log_level": "info"}

    def spawn(self, pod_id: str, **kw: Any) -> tuple[ShimClient, dict[str, Any]]:
        spec = self.pod_spec(pod_id, **kw)
        info = self.zygote.spawn_shim_info(PodSpec.from_json(spec))
        self.pods[pod_id] = {"spec": spec, "info": info}
        return ShimClient(spec["shim_dir"]), info

    def spawn_json(self, pod: Any) -> dict[str, Any]:
        """A spawn_shim request with `pod` sent as is (what ZygoteClient's PodSpec cannot
        carry: malformed specs); raises ZygoteError on an error reply."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(30)
        try:
            sock.connect(self.zygote.socket_path)
            sock.sendall(json.dumps({"op": "spawn_shim", "pod": pod}).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, "the zygote closed the connection"
                buf += chunk
        finally:
            sock.close()
        reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
        if not reply.get("ok"):
            raise ZygoteError(str(reply.get("error")))
        return reply

    @property
    def rootfs(self) -> str:
        if self._rootfs is None:
            self._rootfs = make_busybox_rootfs(os.path.join(self.base, "rootfs"))
        return self._rootfs

    def container_spec(self, cid: str, pod_id: str, args: list[str], tty: bool = False,
                       stdin: bool = False, stdin_once: bool = False,
                       log: bool = True, pid_mode: str | None = None,
                       cgroup: dict[str, Any] | None = None) -> container_spec.ContainerSpec:
        """pid_mode: "pod" (join the pod's), "container" (new); default: the pod's if it has one."""
        hello = ShimClient(self.pods[pod_id]["spec"]["shim_dir"]).hello()
        if pid_mode is None:
            pid_mode = "pod" if "pid" in hello.ns else "container"
        namespaces: list[dict[str, Any]] = [{"type": "mount", "path": None}]
        for t, name in (("net", "network"), ("ipc", "ipc"), ("uts", "uts"), ("pid", "pid")):
            if t in hello.ns and (t != "pid" or pid_mode == "pod"):
                namespaces.append({"type": name, "path": hello.ns[t]})
        if pid_mode == "container":
            namespaces.append({"type": "pid", "path": None})
        base = self.base
        log_path = os.path.join(base, "logs", f"{cid}.log") if log else None
        spec: dict[str, Any] = {
            "id": cid, "pod_id": pod_id,
            "rootfs": {"lower": [self.rootfs], "upper": os.path.join(base, "c", cid, "upper"),
                       "work": os.path.join(base, "c", cid, "work"), "readonly": False},
            "process": {"args": args, "env": ["PATH=/bin", "HOME=/root"], "cwd": "/",
                        "tty": tty, "stdin": stdin, "stdin_once": stdin_once,
                        "user": {"uid": 0, "gid": 0, "username": None, "groupname": None,
                                 "supplemental_groups": [], "policy": "Merge"},
                        "capabilities": None, "no_new_privs": False, "oom_score_adj": None,
                        "rlimits": [], "apparmor_profile": None},
            "namespaces": namespaces, "hostname": None, "mounts": [], "devices": [],
            "masked_paths": [], "readonly_paths": [], "privileged": False, "seccomp": None,
            "cgroup": cgroup, "log_path": log_path,
        }
        for d in (spec["rootfs"]["upper"], spec["rootfs"]["work"]):
            os.makedirs(d, exist_ok=True)
        spec["mounts"] = [m.to_json() for m in container_spec.default_mounts()]
        spec["process"]["capabilities"] = container_spec.compute_capabilities().to_json()
        spec["masked_paths"] = container_spec.default_masked_paths()
        spec["readonly_paths"] = container_spec.default_readonly_paths()
        return container_spec.ContainerSpec.from_json(spec)

    def close(self) -> None:
        for pod in self.pods.values():
            client = ShimClient(pod["spec"]["shim_dir"])
            try:
                client.shutdown(grace=0)
            except Exception:  # noqa: BLE001 - its monitor is gone (or hangs): what the
                # daemon does for a pod without a shim - containers, keepers, pause, pins
                kill_orphaned_pod(pod["spec"]["shim_dir"], pod["spec"]["ns_dir"])
        self.zygote.stop()
        try:
            os.kill(self.zygote_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_gone([p["info"]["pid"] for p in self.pods.values()] + [self.zygote_pid])
        shutil.rmtree(self.base, ignore_errors=True)


def kill_orphaned_pod(shim_dir: str, ns_dir: str) -> None:
    """End a pod nothing serves any more: its containers (pids from their status files; they
    have no cgroup here), then its keepers and pause-holder, then the pins."""
    from cri_server.sandboxes.shim_process import kill_pod_processes
    from runtime.shim import namespaces
    from runtime.shim_client import read_states
    for state in read_states(shim_dir).values():
        if state.pid and state.state == "running":
            try:
                fd = os.pidfd_open(state.pid)
            except OSError:
                continue
            try:
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            finally:
                os.close(fd)
    kill_pod_processes(shim_dir)
    namespaces.unpin_all(ns_dir)


def process_gone(pid: int) -> bool:
    """Gone or a zombie (PID 1 here reaps orphans slowly)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # ESRCH while the process is exiting
        return True


def wait_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(process_gone(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def read_cri_log(path: str | None) -> list[tuple[str, str, str, str]]:
    """(timestamp, stream, tag, text) per line."""
    assert path, "the container has no log file"
    out = []
    with open(path, "rb") as f:
        for raw in f.read().split(b"\n"):
            if raw:
                ts, stream, tag, text = raw.decode().split(" ", 3)
                out.append((ts, stream, tag, text))
    return out
