"""Daemon side of the zygote (contract 1 of docs/architecture.md). Stdlib only; thread-safe (a
connection per call).

    client = start_zygote(state_dir)          # reuses a live zygote on the socket
    info = client.spawn_shim_info(pod_spec)    # {"pid", "pause_pid", "ns"}
    pid = client.spawn_shim(pod_spec)          # just the shim pid
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

from pycri_common.timeouts import scaled
from runtime.lines import recv_line
from runtime.pod_spec import PodSpec

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ZygoteError(RuntimeError):
    """The zygote is unreachable or refused a request (message says why)."""


class ZygoteClient:
    def __init__(self, socket_path: str, timeout: float = 90.0,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.process = process

    def _call(self, req: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(scaled(timeout or self.timeout))
        try:
            try:
                sock.connect(self.socket_path)
            except OSError as e:
                raise ZygoteError(f"zygote at {self.socket_path} is not reachable: {e}") from None
            try:
                sock.sendall(json.dumps(req).encode() + b"\n")
                got = recv_line(sock)
            except TimeoutError:
                raise ZygoteError(f"zygote did not answer {req.get('op')!r} within "
                                  f"{timeout or self.timeout}s") from None
            except OSError as e:  # e.g. reset by a zygote that is exiting
                raise ZygoteError(f"zygote connection failed during {req.get('op')!r}: "
                                  f"{e}") from None
        finally:
            sock.close()
        if got is None:
            raise ZygoteError(f"zygote closed the connection during {req.get('op')!r}")
        reply: dict[str, Any] = json.loads(got[0])
        if not reply.get("ok"):
            raise ZygoteError(str(reply.get("error") or "zygote request failed"))
        return reply

    def ping(self, timeout: float = 2.0) -> int:
        """The zygote's pid; raises ZygoteError if it does not answer."""
        return int(self._call({"op": "ping"}, timeout)["pid"])

    def monitor_pid(self, timeout: float = 2.0) -> int | None:
        """The pid of the monitor the zygote is linked to (None: none yet)."""
        pid = self._call({"op": "ping"}, timeout).get("monitor_pid")
        return int(pid) if pid else None

    def spawn_shim_info(self, pod_spec: PodSpec, adopt: bool = False) -> dict[str, Any]:
        """Serve the pod; returns {"pid", "pause_pid", "ns"} once it is served. With adopt, the
        monitor takes back the running pod of a monitor that died."""
        req: dict[str, Any] = {"op": "spawn_shim", "pod": pod_spec.to_json()}
        if adopt:
            req["adopt"] = True
        reply = self._call(req)
        return {"pid": reply["pid"], "pause_pid": reply.get("pause_pid"),
                "ns": reply.get("ns") or {}}

    def spawn_shim(self, pod_spec: PodSpec) -> int:
        """Start a shim for the pod; returns its pid once it is ready."""
        return int(self.spawn_shim_info(pod_spec)["pid"])

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the zygote to exit (running shims are not affected)."""
        try:
            self._call({"op": "exit"}, timeout)
        except ZygoteError:
            pass
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_zygote(state_dir: str, python: str = sys.executable, log_path: str | None = None,
                 env: dict[str, str] | None = None, timeout: float = 15.0) -> ZygoteClient:
    """Start this process's zygote at <state_dir>/zygote.sock.

    A zygote still answering there belongs to a daemon that is gone (it would exit
    on its own once it notices): it is told to exit now, so that the zygote we use
    is our child and lives exactly as long as we do. Its shims are not affected.
    """
    socket_path = os.path.join(state_dir, "zygote.sock")
    client = ZygoteClient(socket_path)
    try:
        client.ping(timeout=1.0)
        client.stop()
    except ZygoteError:
        pass
    os.makedirs(state_dir, exist_ok=True)
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    child_env = dict(os.environ if env is None else env)
    child_env["PYTHONPATH"] = _PROJECT_ROOT + (
        os.pathsep + child_env["PYTHONPATH"] if child_env.get("PYTHONPATH") else "")
    with open(log_path or os.path.join(state_dir, "zygote.log"), "ab") as log:
        proc = subprocess.Popen([python, "-m", "runtime.zygote", "--socket", socket_path],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True, cwd="/", env=child_env)
    client.process = proc
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ZygoteError(f"zygote exited with code {proc.returncode} during start-up "
                              f"(see {log_path or os.path.join(state_dir, 'zygote.log')})")
        if os.path.exists(socket_path):
            try:
                client.ping(timeout=1.0)
                return client
            except ZygoteError:
                pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise ZygoteError(f"zygote did not come up within {timeout}s")
        time.sleep(0.01)
