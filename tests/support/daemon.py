"""Starts a real `pycri serve` subprocess on temporary dirs and stops it."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proto import api_pb2
from pycri_common.timeouts import SCALE
from tests.support.cri_client import CriClient

REPO_ROOT = Path(__file__).resolve().parents[2]

# Test pods use their own bridge and subnet so they never touch a real node's network.
TEST_BRIDGE = "pycritest0"
TEST_SUBNET = "10.233.0.0/16"

# How much slower than this machine the tests run: the VM leg (scripts/vm.sh) emulates its CPU
# without KVM, so waits for the daemon and containers stretch by the factor that stretches the
# daemon's own internal waits (pycri_common.timeouts).
SLOWDOWN = SCALE


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_toml(path: Path, data: dict[str, Any]) -> None:
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")


def remove_empty_cgroup(path: str) -> None:
    """rmdir a cgroup in every hierarchy; one that still has children stays (the leak check
    then reports what is inside)."""
    base = Path("/sys/fs/cgroup")
    for hierarchy in [base, *(p for p in base.iterdir() if p.is_dir())] if base.exists() else []:
        try:
            os.rmdir(hierarchy / path.lstrip("/"))
        except OSError:
            pass


class PycriDaemon:
    """One pycri daemon with its own socket, root, state, CNI and cgroup parent."""

    def __init__(self, base: Path | None = None, config: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, repo_root: Path | None = None) -> None:
        """repo_root: the checkout whose pycri runs (default: this one; the benches compare
        another checkout's)."""
        self.repo_root = repo_root or REPO_ROOT
        self.base = base or Path(tempfile.mkdtemp(prefix="pycri-test-"))
        self.socket = self.base / "pycri.sock"
        self.root = self.base / "root"
        self.state = self.base / "state"
        self.cni_conf_dir = self.base / "cni-conf"
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.base / "daemon.log"
        self.nri_socket = self.base / "nri.sock"
        self.nri_plugin_dir = self.base / "nri-plugins"
        self.nri_config_dir = self.base / "nri-conf.d"
        self.cgroup_parent = f"/pycri-test-{os.getpid()}"
        cfg: dict[str, Any] = {
            "socket": str(self.socket), "root": str(self.root), "state": str(self.state),
            "log_level": "debug", "cgroup_parent": self.cgroup_parent,
            "streaming": {"address": "127.0.0.1:0"},
            "cni": {"conf_dir": str(self.cni_conf_dir), "default_subnet": TEST_SUBNET,
                    "default_bridge": TEST_BRIDGE},
            "registry": {"config_path": str(self.base / "certs.d"),
                         "auth_file": str(self.base / "docker-config.json")},
            # never the node's own /etc/cdi: tests that use CDI write specs here
            "cdi": {"spec_dirs": [str(self.base / "cdi")]},
            "nri": {"socket_path": str(self.nri_socket), "plugin_path": str(self.nri_plugin_dir),
                    "plugin_config_path": str(self.nri_config_dir)},
        }
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.config_file = self.base / "pycri.toml"
        write_toml(self.config_file, cfg)
        self.env = {**os.environ, "PYTHONPATH": str(self.repo_root), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: CriClient | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 30.0, extra_env: dict[str, str] | None = None) -> PycriDaemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cri_server", "serve", "--config", str(self.config_file)],
                cwd=self.repo_root, env={**self.env, **(extra_env or {})}, stdout=log, stderr=log,
                stdin=subprocess.DEVNULL)
        self.client = CriClient(str(self.socket))
        deadline = time.monotonic() + timeout * SLOWDOWN
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pycri exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.client.Version(api_pb2.VersionRequest(), timeout=2)
                return self
            except Exception:  # noqa: BLE001 - not up yet: retry until the deadline
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pycri did not become ready:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill9(self) -> None:
        """Simulates a daemon crash."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, crash: bool = True) -> PycriDaemon:
        if crash:
            self.kill9()
        else:
            self.stop()
        return self.start()

    def cleanup_dirs(self) -> None:
        """Removes the temporary dirs and the (empty) cgroup parent pycri made for the pods."""
        shutil.rmtree(self.base, ignore_errors=True)
        remove_empty_cgroup(self.cgroup_parent)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def c(self) -> CriClient:
        assert self.client is not None, "daemon not running"
        return self.client
