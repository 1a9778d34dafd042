"""The cAdvisor-compatible metric set of ListMetricDescriptors / ListPodSandboxMetrics.

kubelet's CRI stats provider exports these under the names cAdvisor uses, so
dashboards written for cAdvisor keep working. Every metric carries cAdvisor's
label keys (container, id, image, name, namespace, pod); network metrics add
interface.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cri_server.stats import readers
from cri_server.stats.sources import ContainerSource, PodSource
from proto import api_pb2

BASE_LABELS = ["container", "id", "image", "name", "namespace", "pod"]
NET_LABELS = [*BASE_LABELS, "interface"]

Raw = dict[str, int]


@dataclass(frozen=True)
class ContainerMetricDef:
    name: str
    help: str
    kind: api_pb2.MetricType         # api_pb2.COUNTER or api_pb2.GAUGE
    value: Callable[[Raw, ContainerSource, readers.DiskUsage], int]


CONTAINER_METRICS = [
    ContainerMetricDef("container_cpu_usage_seconds_total",
                       "Cumulative cpu time consumed in seconds.", api_pb2.COUNTER,
                       lambda r, s, d: r.get("cpu_usage_ns", 0) // 1_000_000_000),
    ContainerMetricDef("container_memory_usage_bytes",
                       "Current memory usage in bytes, including all memory regardless of when "
                       "it was accessed", api_pb2.GAUGE,
                       lambda r, s, d: r.get("memory_usage_bytes", 0)),
    ContainerMetricDef("container_memory_working_set_bytes", "Current working set in bytes.",
                       api_pb2.GAUGE, lambda r, s, d: r.get("memory_working_set_bytes", 0)),
    ContainerMetricDef("container_memory_rss", "Size of RSS in bytes.", api_pb2.GAUGE,
                       lambda r, s, d: r.get("memory_rss_bytes", 0)),
    ContainerMetricDef("container_memory_swap", "Container swap usage in bytes.", api_pb2.GAUGE,
                       lambda r, s, d: r.get("swap_usage_bytes", 0)),
    ContainerMetricDef("container_memory_failcnt", "Number of memory usage hits limits",
                       api_pb2.COUNTER, lambda r, s, d: r.get("memory_failcnt", 0)),
    ContainerMetricDef("container_memory_failures_total",
                       "Cumulative count of memory allocation failures.", api_pb2.COUNTER,
                       lambda r, s, d: r.get("page_faults", 0)),
    ContainerMetricDef("container_oom_events_total",
                       "Count of out of memory events observed for the container",
                       api_pb2.COUNTER, lambda r, s, d: r.get("oom_kill_count", 0)),
    ContainerMetricDef("container_processes", "Number of processes running inside the container.",
                       api_pb2.GAUGE, lambda r, s, d: r.get("pids_current", 0)),
    ContainerMetricDef("container_fs_usage_bytes",
                       "Number of bytes that are consumed by the container on this filesystem.",
                       api_pb2.GAUGE, lambda r, s, d: d.bytes),
    ContainerMetricDef("container_fs_inodes_total", "Number of Inodes", api_pb2.GAUGE,
                       lambda r, s, d: d.inodes),
    ContainerMetricDef("container_start_time_seconds",
                       "Start time of the container since unix epoch in seconds.", api_pb2.GAUGE,
                       lambda r, s, d: (s.started_at or s.created_at) // 1_000_000_000),
    ContainerMetricDef("container_last_seen", "Last time a container was seen by the exporter",
                       api_pb2.GAUGE, lambda r, s, d: int(time.time())),
]

NETWORK_METRICS = [
    ("container_network_receive_bytes_total", "Cumulative count of bytes received", "rx_bytes"),
    ("container_network_receive_packets_total", "Cumulative count of packets received",
     "rx_packets"),
    ("container_network_receive_errors_total",
     "Cumulative count of errors encountered while receiving", "rx_errors"),
    ("container_network_receive_packets_dropped_total",
     "Cumulative count of packets dropped while receiving", "rx_dropped"),
    ("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", "tx_bytes"),
    ("container_network_transmit_packets_total", "Cumulative count of packets transmitted",
     "tx_packets"),
    ("container_network_transmit_errors_total",
     "Cumulative count of errors encountered while transmitting", "tx_errors"),
    ("container_network_transmit_packets_dropped_total",
     "Cumulative count of packets dropped while transmitting", "tx_dropped"),
]


def descriptors() -> list[api_pb2.MetricDescriptor]:
    out = [api_pb2.MetricDescriptor(name=m.name, help=m.help, label_keys=BASE_LABELS)
           for m in CONTAINER_METRICS]
    out += [api_pb2.MetricDescriptor(name=name, help=help_, label_keys=NET_LABELS)
            for name, help_, _ in NETWORK_METRICS]
    return out


def _labels(pod: PodSource, container_name: str, container_id: str, image: str) -> list[str]:
    # container, id, image, name, namespace, pod
    return [container_name, container_id, image, container_id, pod.namespace, pod.name]


def pod_metrics(pod: PodSource, disk: readers.DiskUsageCache) -> api_pb2.PodSandboxMetrics:
    now = time.time_ns()
    out = api_pb2.PodSandboxMetrics(pod_sandbox_id=pod.id)
    # Pod-level network counters, labelled like cAdvisor's pause-container series.
    if not pod.host_network:
        for iface in readers.interfaces_of(pod.pause_pid):
            labels = [*_labels(pod, "POD", pod.id, ""), iface.name]
            for name, _, attr in NETWORK_METRICS:
                out.metrics.append(api_pb2.Metric(
                    name=name, timestamp=now, metric_type=api_pb2.COUNTER, label_values=labels,
                    value=api_pb2.UInt64Value(value=getattr(iface, attr))))
    for c in pod.containers:
        raw = readers.cgroup_stats(c.cgroup_path)
        usage = disk.get(c.upper_dir) if c.upper_dir else readers.DiskUsage(0, 0)
        cm = api_pb2.ContainerMetrics(container_id=c.id)
        labels = _labels(pod, c.name, c.id, c.image)
        for m in CONTAINER_METRICS:
            cm.metrics.append(api_pb2.Metric(
                name=m.name, timestamp=now, metric_type=m.kind, label_values=labels,
                value=api_pb2.UInt64Value(value=max(0, int(m.value(raw, c, usage))))))
        out.container_metrics.append(cm)
    return out
