from __future__ import annotations

import os
from pathlib import Path

from cri_server.stats import readers
from cri_server.stats.cadvisor import BASE_LABELS, NET_LABELS, descriptors

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0:    5000      40    1    2    0     0          0         0     3000      30    3    4    0     0       0          0
"""


def test_parse_net_dev() -> None:
    lo, eth0 = readers.parse_net_dev(NET_DEV)
    assert lo.name == "lo" and lo.rx_bytes == 100
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (5000, 40, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (3000, 30, 3, 4)


def test_interfaces_of_our_own_process_excludes_loopback() -> None:
    names = [i.name for i in readers.interfaces_of(os.getpid())]
    assert "lo" not in names
    assert readers.interfaces_of(0) == [] and readers.interfaces_of(2**22 + 7) == []


def test_disk_usage_counts_blocks_and_inodes_once_per_hard_link(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "d" / "f", tmp_path / "hl")
    os.symlink("d/f", tmp_path / "sl")
    usage = readers.disk_usage(str(tmp_path))
    assert usage.inodes == 3  # d, f (once), sl
    assert usage.bytes >= 100_000
    assert readers.disk_usage(str(tmp_path / "absent")) == readers.DiskUsage(0, 0)


def test_disk_usage_cache_keeps_answers_until_forgotten(tmp_path: Path) -> None:
    cache = readers.DiskUsageCache(ttl=3600)
    first = cache.get(str(tmp_path))
    (tmp_path / "new").write_bytes(b"y" * 50_000)
    assert cache.get(str(tmp_path)) == first
    cache.forget(str(tmp_path))
    assert cache.get(str(tmp_path)).inodes == first.inodes + 1


def test_descriptors_have_cadvisor_labels() -> None:
    by_name = {d.name: list(d.label_keys) for d in descriptors()}
    assert by_name["container_cpu_usage_seconds_total"] == BASE_LABELS
    assert by_name["container_memory_working_set_bytes"] == BASE_LABELS
    assert by_name["container_network_receive_bytes_total"] == NET_LABELS
    assert len(by_name) == len(descriptors())
