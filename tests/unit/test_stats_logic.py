"""Pure logic of stats, events ordering, resource updates and metrics state counts."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cri_server import resource_update
from cri_server.containers.record import ContainerRecord
from cri_server.events import CREATED, DELETED, STARTED, STOPPED, LifecycleOrder
from cri_server.metrics import count_states
from cri_server.stats import adapters, collector, readers
from cri_server.stats.collector import StatsCollector
from cri_server.stats.service import StatsService
from cri_server.stats.sources import ContainerSource, PodSource
from proto import api_pb2

MiB = 1 << 20


# -- resource updates ----------------------------------------------------------------
def test_merge_keeps_fields_the_update_leaves_at_zero() -> None:
    current = {"cpu_shares": 512, "cpu_quota": 50000, "cpu_period": 100000,
               "memory_limit_in_bytes": 128 * MiB, "memory_swap_limit_in_bytes": 128 * MiB,
               "cpuset_cpus": "0", "oom_score_adj": 900, "unified": {"a": "1"},
               "hugepage_limits": [{"page_size": "2MB", "limit": 1}]}
    update = {"cpu_shares": 1024, "cpu_quota": 0, "memory_limit_in_bytes": 0,
              "cpuset_cpus": None, "oom_score_adj": -5, "unified": {"b": "2"},
              "hugepage_limits": [{"page_size": "1GB", "limit": 3}]}
    merged = resource_update.merge(current, update)
    assert merged["cpu_shares"] == 1024 and merged["cpu_quota"] == 50000
    assert merged["memory_limit_in_bytes"] == 128 * MiB and merged["cpuset_cpus"] == "0"
    assert merged["oom_score_adj"] == 900           # a process property: never updated
    assert merged["unified"] == {"a": "1", "b": "2"}
    assert {h["page_size"] for h in merged["hugepage_limits"]} == {"2MB", "1GB"}
    assert current["cpu_shares"] == 512             # the input is not modified


@pytest.mark.parametrize(("old_swap", "update_swap", "expected"), [
    (0, 0, 256 * MiB),                # no swap asked before: still none
    (128 * MiB, 0, 256 * MiB),        # swap == memory (no swap): follows the new limit
    (512 * MiB, 0, 512 * MiB),        # swap was allowed: kept
    (128 * MiB, -1, -1),              # asked explicitly
])
def test_merge_swap_limit_follows_memory_when_no_swap_was_allowed(
        old_swap: int, update_swap: int, expected: int) -> None:
    current = {"memory_limit_in_bytes": 128 * MiB, "memory_swap_limit_in_bytes": old_swap}
    merged = resource_update.merge(current, {"memory_limit_in_bytes": 256 * MiB,
                                             "memory_swap_limit_in_bytes": update_swap})
    assert merged["memory_swap_limit_in_bytes"] == expected


def test_changed_only_writes_the_difference_and_keeps_pairs_together() -> None:
    current = {"cpu_shares": 2, "cpu_quota": 50000, "cpu_period": 100000,
               "memory_limit_in_bytes": 64, "memory_swap_limit_in_bytes": 64,
               "oom_score_adj": 0, "unified": {}}
    merged = {**current, "cpu_period": 50000, "oom_score_adj": 7}
    assert resource_update.changed_only(current, merged) == {"cpu_quota": 50000,
                                                             "cpu_period": 50000}
    merged = {**current, "memory_swap_limit_in_bytes": 128}
    assert resource_update.changed_only(current, merged) == {
        "memory_limit_in_bytes": 64, "memory_swap_limit_in_bytes": 128}
    assert resource_update.changed_only(current, dict(current)) == {}


# -- event ordering ---------------------------------------------------------------------
def test_lifecycle_order_fills_in_and_drops_late_reports() -> None:
    order = LifecycleOrder()
    assert order.plan("a", CREATED, started=False) == [CREATED]
    # the exit was seen before StartContainer reported STARTED
    assert order.plan("a", STOPPED, started=True) == [STARTED, STOPPED]
    assert order.plan("a", STARTED, started=True) == []
    assert order.plan("a", STOPPED, started=True) == []
    assert order.plan("a", DELETED, started=True) == [DELETED]
    # removed while running: STOPPED comes first; never started: nothing invented
    order.plan("b", CREATED, started=False)
    order.plan("b", STARTED, started=True)
    assert order.plan("b", DELETED, started=True) == [STOPPED, DELETED]
    order.plan("c", CREATED, started=False)
    assert order.plan("c", DELETED, started=False) == [DELETED]
    # no history (after a restart): as reported
    assert order.plan("d", STOPPED, started=True) == [STOPPED]


def test_lifecycle_order_forgets_the_oldest() -> None:
    order = LifecycleOrder(remember=2)
    for cid in ("a", "b", "c"):
        order.plan(cid, CREATED, started=False)
    assert order.plan("a", CREATED, started=False) == [CREATED]   # "a" was forgotten
    assert order.plan("c", CREATED, started=False) == []


def test_count_states_includes_known_states() -> None:
    recs = [SimpleNamespace(state=s) for s in ("ready", "ready", "notready")]
    assert count_states(recs, ("creating", "ready")) == {"creating": 0, "ready": 2,
                                                         "notready": 1}


# -- collector ----------------------------------------------------------------------------
def _src(cid: str = "c1", cgroup: str = "/cg/c1", limit: int = 0) -> ContainerSource:
    return ContainerSource(id=cid, pod_id="p", name="n", attempt=1, labels={"l": "v"},
                           annotations={}, cgroup_path=cgroup, upper_dir="", memory_limit=limit)


def test_nano_cores_come_from_the_previous_sample(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    readings = iter([{"cpu_usage_ns": 1_000_000_000, "memory_working_set_bytes": 10 * MiB},
                     {"cpu_usage_ns": 1_500_000_000, "memory_working_set_bytes": 10 * MiB}])
    monkeypatch.setattr(readers, "cgroup_stats", lambda path, *_: next(readings))
    now = [10_000_000_000]
    monkeypatch.setattr(collector.time, "time_ns", lambda: now[0])
    c = StatsCollector(str(tmp_path))
    first = c.container_stats(_src(limit=64 * MiB))
    now[0] += 1_000_000_000
    assert not first.cpu.HasField("usage_nano_cores")
    assert first.memory.available_bytes.value == 54 * MiB
    assert first.attributes.labels["l"] == "v" and first.attributes.metadata.attempt == 1
    second = c.container_stats(_src())
    assert second.cpu.usage_nano_cores.value == 500_000_000   # half a core over 1 s
    assert not second.memory.HasField("available_bytes")    # no limit


def test_counter_going_backwards_gives_no_rate(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    readings = iter([{"cpu_usage_ns": 5000}, {"cpu_usage_ns": 10}])
    monkeypatch.setattr(readers, "cgroup_stats", lambda path, *_: next(readings))
    c = StatsCollector(str(tmp_path))
    c.container_stats(_src())
    assert not c.container_stats(_src()).cpu.HasField("usage_nano_cores")


def test_old_samples_are_forgotten(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(readers, "cgroup_stats", lambda path, *_: {"cpu_usage_ns": 1})
    now = [0]
    monkeypatch.setattr(collector.time, "time_ns", lambda: now[0])
    c = StatsCollector(str(tmp_path))
    c.container_stats(_src("old"))
    now[0] = collector.SAMPLE_FORGET_NS + 1
    c.container_stats(_src("new"))
    assert set(c._last_cpu) == {"new"}


def test_pod_without_own_cgroup_adds_up_its_containers(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    per_path = {"/cg/a": {"cpu_usage_ns": 10, "memory_working_set_bytes": 100,
                          "pids_current": 1},
                "/cg/b": {"cpu_usage_ns": 5, "memory_working_set_bytes": 50, "pids_current": 2}}
    monkeypatch.setattr(readers, "cgroup_stats", lambda path, *_: per_path.get(path, {}))
    monkeypatch.setattr(readers, "interfaces_of", lambda pid: [
        readers.InterfaceCounters("net1", 1, 1, 0, 0, 2, 2, 0, 0),
        readers.InterfaceCounters("eth0", 7, 1, 0, 0, 9, 2, 0, 0)])
    pod = PodSource(id="p", name="pod", uid="u", namespace="ns", attempt=0, labels={},
                    annotations={}, cgroup_path="/cg/gone", pause_pid=42,
                    containers=[_src("a", "/cg/a"), _src("b", "/cg/b")])
    stats = StatsCollector(str(tmp_path)).pod_stats(pod)
    assert stats.linux.cpu.usage_core_nano_seconds.value == 15
    assert stats.linux.memory.working_set_bytes.value == 150
    assert stats.linux.process.process_count.value == 3
    assert stats.linux.network.default_interface.name == "eth0"
    assert stats.linux.network.default_interface.tx_bytes.value == 9
    assert [c.attributes.id for c in stats.linux.containers] == ["a", "b"]
    host = PodSource(**{**pod.__dict__, "host_network": True})
    assert not StatsCollector(str(tmp_path)).pod_stats(host).linux.HasField("network")


def test_missing_cgroup_reads_as_empty() -> None:
    assert readers.cgroup_stats("") == {}
    assert readers.cgroup_stats("/pycri-unit-test-does-not-exist/x") == {}
    assert readers.cgroup_stats("relative/path") == {}


def test_disk_usage_cache_refreshes_stale_answers_in_the_background(tmp_path: Path) -> None:
    cache = readers.DiskUsageCache(ttl=0.0)
    first = cache.get(str(tmp_path))            # measured at once
    (tmp_path / "f").write_bytes(b"z" * 10_000)
    assert cache.get(str(tmp_path)) == first    # stale answer, refresh scheduled
    deadline = time.monotonic() + 10
    while cache.get(str(tmp_path)).inodes == first.inodes:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert cache.get(str(tmp_path)).inodes == first.inodes + 1


def test_disk_usage_cache_forgets_directories_nobody_asks_about(tmp_path: Path) -> None:
    cache = readers.DiskUsageCache(ttl=3600, forget_after=0.0)
    cache.get(str(tmp_path / "a"))
    cache.get(str(tmp_path / "b"))   # prunes "a" (and then remembers "b")
    assert set(cache._cache) == {str(tmp_path / "b")}


# -- adapters and the service ------------------------------------------------------------------
def _record(cid: str, state: str, pod: str = "pod1", labels: dict[str, str] | None = None,
            created_at: int = 0) -> ContainerRecord:
    return ContainerRecord(
        id=cid, pod_id=pod, name=f"name-{cid}", attempt=2, image="img:1",
        labels=labels or {}, state=state, created_at=created_at,
        resources={"memory_limit_in_bytes": 5 * MiB},
        spec={"cgroup": {"driver": "cgroupfs", "path": f"/kubepods/{cid}"},
              "rootfs": {"upper": f"/root/containers/{cid}/upper"}})


def test_container_source_from_a_record() -> None:
    src = adapters.container_source(_record("abc", "running", labels={"k": "v"}))
    assert (src.id, src.pod_id, src.name, src.attempt) == ("abc", "pod1", "name-abc", 2)
    assert src.cgroup_path == "/kubepods/abc"
    assert src.upper_dir == "/root/containers/abc/upper"
    assert src.memory_limit == 5 * MiB and src.labels == {"k": "v"}
    bare = ContainerRecord(id="x", pod_id="p", name="n", attempt=0, image="i", state="created")
    assert adapters.container_source(bare).cgroup_path == ""


def _sandbox(pod_id: str, state: str, labels: dict[str, str] | None = None) -> Any:
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"n-{pod_id}", uid="u", namespace="ns"),
        labels=labels or {})
    return SimpleNamespace(id=pod_id, state=state, config=config, cgroup_path="/kubepods/pod",
                           pause_pid=1234, host_network=False, created_at=0)


def test_pod_source_of_a_stopped_pod_has_no_pause_pid() -> None:
    assert adapters.pod_source(_sandbox("p", "ready"), []).pause_pid == 1234
    assert adapters.pod_source(_sandbox("p", "notready"), []).pause_pid == 0


class _FakeContainers:
    def __init__(self, recs: list[ContainerRecord]) -> None:
        self.recs = recs

    def records(self) -> list[ContainerRecord]:
        return list(self.recs)


class _FakeSandboxes:
    def __init__(self, pods: list[Any]) -> None:
        self.pods = pods

    def list(self) -> list[Any]:
        return list(self.pods)


def test_service_lists_live_containers_and_ready_pods_with_filters(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(readers, "cgroup_stats", lambda path, *_: {})
    recs = [_record("aa1", "running", labels={"app": "x"}, created_at=2),
            _record("aa2", "created", created_at=1),
            _record("bb1", "exited", labels={"app": "x"}),
            _record("cc1", "running", pod="pod2", created_at=3)]
    svc = StatsService(_FakeContainers(recs),
                       _FakeSandboxes([_sandbox("pod1", "ready", {"t": "1"}),
                                       _sandbox("pod2", "notready")]), str(tmp_path))

    def ids(**flt: Any) -> list[str]:
        f = api_pb2.ContainerStatsFilter(**flt) if flt else None
        return [s.attributes.id for s in svc.list_container_stats(f).stats]

    assert ids() == ["aa2", "aa1", "cc1"]      # exited left out, oldest first
    assert ids(id="aa") == ["aa2", "aa1"]
    assert ids(pod_sandbox_id="pod2") == ["cc1"]
    assert ids(label_selector={"app": "x"}) == ["aa1"]
    pods = svc.list_pod_stats(None).stats
    assert [p.attributes.id for p in pods] == ["pod1"]          # ready pods only
    assert [c.attributes.id for c in pods[0].linux.containers] == ["aa2", "aa1"]
    assert not svc.list_pod_stats(api_pb2.PodSandboxStatsFilter(label_selector={"t": "2"})).stats
    metrics = svc.pod_metrics()
    assert [m.pod_sandbox_id for m in metrics] == ["pod1"]
    assert [c.container_id for c in metrics[0].container_metrics] == ["aa2", "aa1"]


def test_background_disk_walker_is_a_daemon_thread(tmp_path: Path) -> None:
    cache = readers.DiskUsageCache(ttl=0.0)
    cache.get(str(tmp_path))
    cache.get(str(tmp_path))
    walkers = [t for t in threading.enumerate() if t.name == "disk-usage"]
    assert walkers and all(t.daemon for t in walkers)
