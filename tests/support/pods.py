"""Helpers for pod sandbox tests: request builders, namespace/network probes, leftovers."""
from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Self

from proto import api_pb2
from tests.support.cri_client import CriClient
from tests.support.daemon import PycriDaemon


def pod_config(name: str | None = None, namespace: str = "pycri-test", uid: str | None = None,
               attempt: int = 0, hostname: str = "", host_network: bool = False,
               pid: api_pb2.NamespaceMode = api_pb2.CONTAINER,
               ipc: api_pb2.NamespaceMode = api_pb2.POD,
               sysctls: dict[str, str] | None = None, dns: api_pb2.DNSConfig | None = None,
               labels: dict[str, str] | None = None,
               annotations: dict[str, str] | None = None,
               port_mappings: list[api_pb2.PortMapping] | None = None,
               cgroup_parent: str = "") -> api_pb2.PodSandboxConfig:
    name = name or f"pod-{uuid.uuid4().hex[:8]}"
    ns_opts = api_pb2.NamespaceOption(network=api_pb2.NODE if host_network else api_pb2.POD,
                                      pid=pid, ipc=ipc)
    linux = api_pb2.LinuxPodSandboxConfig(
        cgroup_parent=cgroup_parent, sysctls=sysctls or {},
        security_context=api_pb2.LinuxSandboxSecurityContext(namespace_options=ns_opts))
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=name, namespace=namespace,
                                            uid=uid or uuid.uuid4().hex, attempt=attempt),
        hostname=hostname, dns_config=dns, labels=labels or {}, annotations=annotations or {},
        port_mappings=port_mappings or [], linux=linux)


def run_pod(cri: CriClient, config: api_pb2.PodSandboxConfig | None = None,
            handler: str = "", timeout: float | None = None) -> str:
    req = api_pb2.RunPodSandboxRequest(config=config or pod_config(), runtime_handler=handler)
    return str(cri.RunPodSandbox(req, timeout=timeout).pod_sandbox_id)


def status(cri: CriClient, pod_id: str, verbose: bool = False
           ) -> api_pb2.PodSandboxStatusResponse:
    return cri.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id,
                                                                verbose=verbose))


def info(cri: CriClient, pod_id: str) -> dict[str, Any]:
    return dict(json.loads(status(cri, pod_id, verbose=True).info["info"]))


def stop(cri: CriClient, pod_id: str) -> None:
    cri.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))


def remove(cri: CriClient, pod_id: str) -> None:
    cri.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def stop_and_remove(cri: CriClient, pod_id: str) -> None:
    stop(cri, pod_id)
    remove(cri, pod_id)


def remove_all(cri: CriClient, pod_ids: list[str], parallel: int = 1) -> None:
    """Stops and removes every pod, even when some fail; then raises the first failure."""
    errors: list[BaseException] = []

    def one(pod_id: str) -> None:
        try:
            stop_and_remove(cri, pod_id)
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
        list(pool.map(one, pod_ids))
    if errors:
        raise errors[0]


def list_pods(cri: CriClient, flt: api_pb2.PodSandboxFilter | None = None
              ) -> list[api_pb2.PodSandbox]:
    return list(cri.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=flt)).items)


def ns_inode(pid: int | str, ns: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{ns}")


def nspid_chain(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return []


def in_netns(netns: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net={netns}", *cmd], check=False, capture_output=True,
                          text=True, timeout=timeout)


_LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("listening", flush=True)
for _ in range(int(sys.argv[2])):
    c, _a = s.accept(); c.sendall(b"hello from pod\\n"); c.close()
"""


class PodListener:
    """A TCP server inside a pod's network namespace (nsenter --net) answering `count` times."""

    def __init__(self, netns: str, port: int = 8080, count: int = 1) -> None:
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", sys.executable, "-c", _LISTENER, str(port), str(count)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "listening", self.proc.stderr.read() if self.proc.stderr else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tcp_hello(ip: str, port: int = 8080, timeout: float = 5.0) -> bytes:
    with socket.create_connection((ip, port), timeout=timeout) as s:
        return s.recv(100)


def tcp_hello_from_netns(netns: str, ip: str, port: int = 8080) -> str:
    code = ("import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5);"
            "print(s.recv(100).decode().strip())")
    r = in_netns(netns, sys.executable, "-c", code, ip, str(port))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _serving_processes(base: Path) -> list[tuple[int, list[str]]]:
    """(pid, the paths of its fds) of every live monitor or per-pod shim with an fd under base."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            if comm not in ("pycri-shim", "pycri-monitor"):
                continue
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if stat == "Z":
                continue
            fds = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(str(base) in fd for fd in fds):
            found.append((int(entry), fds))
    return found


def shim_pids_of(base: Path) -> list[int]:
    """Live processes serving a pod of a test daemon's dir: the monitor while it holds some
    pod's shim.log (it serves that pod), a per-pod shim. A monitor with no pods is not one."""
    return [pid for pid, fds in _serving_processes(base)
            if any(str(base) in fd and fd.endswith("/shim.log") for fd in fds)]


def monitor_pids_of(base: Path) -> list[int]:
    """Every live monitor (or per-pod shim) of a test daemon's dir, serving pods or not."""
    return [pid for pid, _ in _serving_processes(base)]


def wait_until(cond: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return bool(cond())


def leftovers(d: PycriDaemon, ipam_dir: Path | None = None) -> dict[str, list[str]]:
    """Per-pod state a daemon still holds: pinned ns, shim dirs, pod dirs, IPs, cgroups."""
    out: dict[str, list[str]] = {}

    def listdir(p: Path) -> list[str]:
        try:
            return sorted(os.listdir(p))
        except FileNotFoundError:
            return []

    out["ns"] = listdir(d.state / "ns")
    out["netns"] = listdir(d.state / "netns")
    out["shims"] = listdir(d.state / "shims")
    out["pods"] = listdir(d.root / "pods")
    out["cni cache"] = [n for n in listdir(d.state / "cni") if not n.startswith(".")]
    if ipam_dir is not None:
        out["ips"] = [n for n in listdir(ipam_dir) if n[0].isdigit() or ":" in n]
    mounts = Path("/proc/self/mountinfo").read_text()
    out["mounts"] = [line.split()[4] for line in mounts.splitlines() if str(d.base) in line]
    out["cgroups"] = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*{d.cgroup_parent}")]
    return {k: v for k, v in out.items() if v}
