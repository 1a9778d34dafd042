"""Stats readings through kept-open cgroup files against this host's real hierarchies: the
values move between polls, a removed cgroup reads as gone, one made again at the same path
reads again (its old fds fail with ENODEV and are replaced), and nothing stays open."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from cri_server.stats import readers
from cri_server.stats.collector import CONTAINER_PARTS, POD_PARTS
from cri_server.stats.kept_files import KeptFiles
from runtime import cgroups

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def test_kept_files_follow_a_real_cgroup_through_removal_and_recreation() -> None:
    path = f"/pycri-test-kept-{os.getpid()}/c1"
    kept = KeptFiles()
    sleeper = None
    try:
        cgroups.create_cgroup(path)
        sleeper = subprocess.Popen(["sh", "-c", "while :; do :; done"])
        cgroups.attach(path, sleeper.pid)
        first = readers.cgroup_stats(path, POD_PARTS, kept)
        assert first["pids_current"] == 1 and "memory_working_set_bytes" in first
        time.sleep(0.3)
        second = readers.cgroup_stats(path, POD_PARTS, kept)
        assert second["cpu_usage_ns"] > first["cpu_usage_ns"]     # a busy loop: cpu moves
        assert kept.open_fds() >= 3
        sleeper.kill()
        sleeper.wait()
        sleeper = None
        cgroups.remove_cgroup(path)
        assert readers.cgroup_stats(path, CONTAINER_PARTS, kept) == {}
        assert readers.cgroup_stats(path, POD_PARTS, kept) == {}
        assert kept.open_fds() == 0       # the removed cgroup's fds are closed
        cgroups.create_cgroup(path)
        again = readers.cgroup_stats(path, POD_PARTS, kept)
        assert again["pids_current"] == 0 and "cpu_usage_ns" in again
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for p in (path, os.path.dirname(path)):
            try:
                cgroups.remove_cgroup(p)
            except OSError:
                pass
        for key in list(kept._groups):
            kept.forget(key)
    assert kept.open_fds() == 0


def test_a_stale_fd_of_a_recreated_cgroup_is_replaced() -> None:
    path = f"/pycri-test-kept-{os.getpid()}/c2"
    kept = KeptFiles()
    try:
        cgroups.create_cgroup(path)
        assert readers.cgroup_stats(path, CONTAINER_PARTS, kept) != {}
        fds_before = kept.open_fds()
        cgroups.remove_cgroup(path)          # no read in between: the kept fds go stale
        cgroups.create_cgroup(path)
        reading = readers.cgroup_stats(path, CONTAINER_PARTS, kept)
        assert reading != {} and reading["cpu_usage_ns"] == 0
        assert kept.open_fds() == fds_before
    finally:
        for p in (path, os.path.dirname(path)):
            try:
                cgroups.remove_cgroup(p)
            except OSError:
                pass
        for key in list(kept._groups):
            kept.forget(key)
