"""The files every container of a pod mounts: hostname, hosts, resolv.conf.

Written atomically (temp + rename) into the pod's directory; not fsynced, as a pod
does not survive a reboot (its sandbox is NOTREADY and kubelet makes a new one).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from proto import api_pb2

HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_HOSTS = "/etc/hosts"


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, text.encode())  # no fsync: after a power loss the pod is gone anyway
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def resolv_conf(dns: api_pb2.DNSConfig, host_file: str = HOST_RESOLV_CONF) -> str:
    """resolv.conf from the pod's DNSConfig, or the host's when the config is empty."""
    if not (dns.servers or dns.searches or dns.options):
        try:
            return Path(host_file).read_text()
        except OSError:
            return ""
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {server}" for server in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def hosts_file(hostname: str, ips: list[str]) -> str:
    lines = ["127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet",
             "fe00::0\tip6-mcastprefix",
             "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters"]
    lines += [f"{ip}\t{hostname}" for ip in ips]
    return "\n".join(lines) + "\n"


def host_hostname() -> str:
    return socket.gethostname()


def write_pod_files(pod_dir: Path, hostname: str, dns: api_pb2.DNSConfig,
                    host_network: bool) -> None:
    pod_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _write_atomic(pod_dir / "hostname", hostname + "\n")
    _write_atomic(pod_dir / "resolv.conf", resolv_conf(dns))
    if host_network:
        try:
            text = Path(HOST_HOSTS).read_text()
        except OSError:
            text = hosts_file(hostname, [])
        _write_atomic(pod_dir / "hosts", text)
    else:
        _write_atomic(pod_dir / "hosts", hosts_file(hostname, []))


def write_hosts_with_ips(pod_dir: Path, hostname: str, ips: list[str]) -> None:
    _write_atomic(pod_dir / "hosts", hosts_file(hostname, ips))
