"""connect_in_netns reaches a listener that exists only inside another network namespace."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from cri_server.streaming.netns_socket import connect_in_netns

pytestmark = pytest.mark.integration

ECHO_SERVER = """
import socket, sys
s = socket.create_server(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
while d := c.recv(65536):
    c.sendall(d.upper())
"""


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for ip netns")
    name = f"pycri-t-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_connect_in_netns_reaches_only_the_namespace(netns: str) -> None:
    server = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", ECHO_SERVER],
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        threads_before = threading.active_count()
        own_netns = os.readlink("/proc/thread-self/ns/net")
        with connect_in_netns(f"/run/netns/{netns}", "127.0.0.1", port, timeout=5) as sock:
            sock.sendall(b"inside")
            assert sock.recv(100) == b"INSIDE"
        assert threading.active_count() == threads_before  # the setns thread is gone
        # The caller's own namespace is untouched: nothing listens there on that port.
        with pytest.raises(ConnectionRefusedError):
            connect_in_netns(None, "127.0.0.1", port, timeout=5).close()
        assert os.readlink("/proc/thread-self/ns/net") == own_netns
    finally:
        server.kill()
        server.wait()


def test_connect_in_missing_netns_raises() -> None:
    with pytest.raises(OSError):
        connect_in_netns("/run/netns/does-not-exist-pycri", "127.0.0.1", 1, timeout=1)
