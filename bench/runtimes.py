"""The two runtimes under test, each started with its own temporary dirs and socket.

Both get the same CNI configuration (one bridge network on a bench-only
subnet), the same loopback registry and are driven by the same CriClient.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from proto import api_pb2
from tests.support.cri_client import CriClient
from tests.support.daemon import PycriDaemon

BENCH_BRIDGE = "pycribench0"
BENCH_SUBNET = "10.234.0.0/16"
CNI_BIN = "/usr/lib/cni"


def write_cni_conf(conf_dir: Path, data_dir: Path) -> None:
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0", "name": "pycri-bench",
        "plugins": [
            {"type": "bridge", "bridge": BENCH_BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(data_dir),
                      "ranges": [[{"subnet": BENCH_SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-bench.conflist").write_text(json.dumps(conflist, indent=2))


def process_tree_pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        except OSError:
            continue
    return total


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


class Pycri:
    name = "pycri"

    def __init__(self, base: Path, cni_conf: Path, shim_python: str = "",
                 repo_root: Path | None = None, name: str = "pycri") -> None:
        """repo_root: run another checkout's pycri (an A/B of two versions), as `name`."""
        self.name = name
        self.daemon = PycriDaemon(base=base / name, config={
            "log_level": "info", "cni": {"conf_dir": str(cni_conf)},
            "cgroup_parent": f"/{name}-bench", "runtime": {"shim_python": shim_python}},
            repo_root=repo_root)

    def start(self) -> CriClient:
        self.daemon.start()
        return self.daemon.c

    def stop(self) -> None:
        self.daemon.stop()
        shutil.rmtree(self.daemon.base, ignore_errors=True)

    def runtime_pids(self) -> list[int]:
        """Daemon, zygote, shims and pause-holders (not the containers' own processes)."""
        assert self.daemon.proc is not None
        marker = str(self.daemon.state)
        ours = [p for p in _all_pids() if marker in _cmdline(p)]
        pauses = [p for p in _all_pids() if _ppid(p) in ours and _cmdline(p).startswith("pycri-pause")]
        return [self.daemon.proc.pid, *ours, *pauses]


class Containerd:
    name = "containerd"

    def __init__(self, base: Path, cni_conf: Path, registry_host: str, pause_image: str) -> None:
        self.base = base / "containerd"
        self.socket = self.base / "containerd.sock"
        self.cni_conf = cni_conf
        self.registry_host = registry_host
        self.pause_image = pause_image
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        certs = self.base / "certs.d" / self.registry_host
        certs.mkdir(parents=True, exist_ok=True)
        (certs / "hosts.toml").write_text(
            f'server = "http://{self.registry_host}"\n\n[host."http://{self.registry_host}"]\n'
            '  capabilities = ["pull", "resolve"]\n  skip_verify = true\n')
        config = f"""version = 2
root = "{self.base}/root"
state = "{self.base}/state"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.base}/ttrpc.sock"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{self.pause_image}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{self.base}/certs.d"
"""
        path = self.base / "config.toml"
        path.write_text(config)
        return path

    def start(self) -> CriClient:
        self.base.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        with open(self.base / "containerd.log", "ab") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL)
        client = CriClient(str(self.socket))
        deadline = time.monotonic() + 30
        while True:
            try:
                client.Version(api_pb2.VersionRequest(), timeout=2)
                return client
            except Exception:  # noqa: BLE001 - not up yet: retry until the deadline
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("containerd did not start; see "
                                       f"{self.base / 'containerd.log'}") from None
                time.sleep(0.1)

    def runtime_pids(self) -> list[int]:
        """containerd, its shims for this instance and the pause processes they run."""
        assert self.proc is not None
        shims = [p for p in _all_pids()
                 if "containerd-shim" in _cmdline(p) and str(self.socket) in _cmdline(p)]
        pauses = [p for p in _all_pids() if _ppid(p) in shims and _cmdline(p).strip() == "/pause"]
        return [self.proc.pid, *shims, *pauses]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        # shims outlive containerd by design: stop them, then unmount what they left.
        for p in _all_pids():
            if "containerd-shim" in _cmdline(p) and str(self.socket) in _cmdline(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.5)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if str(self.base) in line.split()[4]]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def make_base() -> Path:
    return Path(tempfile.mkdtemp(prefix="pycri-bench-"))
