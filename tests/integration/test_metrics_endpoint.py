"""The daemon's own Prometheus endpoint (metrics.address), scraped over 127.0.0.1: per-RPC
counts, errors and latency, pods and containers by state, image pulls and bytes."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from proto import api_pb2
from tests.support import oci_build as ob
from tests.support import pods
from tests.support.cri_client import rpc_error
from tests.support.daemon import PycriDaemon
from tests.support.registry import Registry

_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


@pytest.fixture
def metrics_daemon() -> Iterator[PycriDaemon]:
    d = PycriDaemon(config={"metrics": {"address": "127.0.0.1:0"}})
    try:
        yield d.start()
    finally:
        d.stop()
        d.cleanup_dirs()


def _metrics_url(d: PycriDaemon) -> str:
    deadline = time.monotonic() + 10
    while True:
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", d.log_path.read_text())
        if m:
            return m.group(1)
        assert time.monotonic() < deadline, d.log_tail()
        time.sleep(0.05)


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for line in resp.text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group("labels") or ""))
        out[(m.group("name"), labels)] = float(m.group("value"))
    return out


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_endpoint_scraped_over_loopback(metrics_daemon: PycriDaemon) -> None:
    d = metrics_daemon
    url = _metrics_url(d)
    c = d.c
    for _ in range(3):
        c.Version(api_pb2.VersionRequest())
    rpc_error(c.ContainerStatus, api_pb2.ContainerStatusRequest(container_id="f" * 64))
    pod_id = pods.run_pod(c)
    stopped = pods.run_pod(c)
    pods.stop(c, stopped)
    with Registry() as reg:
        image = ob.Image([ob.Layer.build([ob.File("hello.txt", "hello metrics\n")])])
        ob.push_image(reg.url, "metrics/img", "v1", image)
        c.PullImage(api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(image=f"{reg.host}/metrics/img:v1")))
        rpc_error(c.PullImage, api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(image=f"{reg.host}/metrics/absent:v1")))
    try:
        s = _scrape(url)
        assert _value(s, "pycri_rpc_requests_total", method="Version", code="OK") >= 3
        assert _value(s, "pycri_rpc_requests_total", method="ContainerStatus",
                      code="NOT_FOUND") == 1
        assert _value(s, "pycri_rpc_errors_total", method="ContainerStatus",
                      code="NOT_FOUND") == 1
        assert _value(s, "pycri_rpc_errors_total", method="Version", code="OK") == 0
        assert _value(s, "pycri_rpc_duration_seconds_count", method="RunPodSandbox") == 2
        assert _value(s, "pycri_rpc_duration_seconds_bucket", method="Version", le="+Inf") >= 3
        assert _value(s, "pycri_pods", state="ready") == 1
        assert _value(s, "pycri_pods", state="notready") == 1
        assert ("pycri_containers", frozenset({("state", "running")})) in s
        assert _value(s, "pycri_image_pulls_total", result="success") == 1
        assert _value(s, "pycri_image_pulls_total", result="failure") == 1
        assert _value(s, "pycri_image_pull_bytes_total") >= len(image.layers[0].blob)
    finally:
        for p in (pod_id, stopped):
            pods.stop_and_remove(c, p)
    assert _value(_scrape(url), "pycri_pods", state="ready") == 0
