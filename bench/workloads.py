"""What the bench measures, written once against the CRI and run on either runtime."""
from __future__ import annotations

import itertools
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from proto import api_pb2
from tests.support.cri_client import CriClient

_counter = itertools.count()


def pod_config(log_dir: Path) -> api_pb2.PodSandboxConfig:
    n = next(_counter)
    uid = uuid.uuid4().hex
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"bench-{n}", namespace="bench", uid=uid),
        hostname=f"bench-{n}", log_directory=str(log_dir / uid),
        linux=api_pb2.LinuxPodSandboxConfig(security_context=api_pb2.LinuxSandboxSecurityContext(
            namespace_options=api_pb2.NamespaceOption(network=api_pb2.POD, pid=api_pb2.CONTAINER,
                                                      ipc=api_pb2.POD))))


def container_config(image: str, name: str = "sleep") -> api_pb2.ContainerConfig:
    return api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name), image=api_pb2.ImageSpec(image=image),
        command=["sleep", "3600"], log_path=f"{name}.log",
        linux=api_pb2.LinuxContainerConfig())


class Timer:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self._t


def lifecycle_round(c: CriClient, image: str, log_dir: Path) -> dict[str, float]:
    """One pod through its whole life; each step timed on its own."""
    out: dict[str, float] = {}
    cfg = pod_config(log_dir)
    with Timer() as t:
        pod = c.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    out["runp"] = t.seconds
    with Timer() as t:
        cid = c.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config(image), sandbox_config=cfg)).container_id
    out["create"] = t.seconds
    with Timer() as t:
        c.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    out["start"] = t.seconds
    out["create+start"] = out["create"] + out["start"]
    with Timer() as t:
        c.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=["true"], timeout=10))
    out["execsync"] = t.seconds
    with Timer() as t:
        c.StopContainer(api_pb2.StopContainerRequest(container_id=cid, timeout=0))
    out["stop"] = t.seconds
    out.update(stop_and_remove_timed(c, pod))
    return out


def stop_and_remove_timed(c: CriClient, pod: str, suffix: str = "") -> dict[str, float]:
    with Timer() as t:
        c.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
    out = {"stopp" + suffix: t.seconds}
    with Timer() as t:
        c.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    out["rmp" + suffix] = t.seconds
    if not suffix:
        out["stopp+rmp"] = out["stopp"] + out["rmp"]
    return out


def pod_round(c: CriClient, log_dir: Path) -> dict[str, float]:
    """A pod without containers through its life (critest's PodSandbox benchmark)."""
    cfg = pod_config(log_dir)
    with Timer() as t:
        pod = c.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    out = {"runp (pod only)": t.seconds}
    out.update(stop_and_remove_timed(c, pod, " (pod only)"))
    return out


def pod_to_running(c: CriClient, image: str, log_dir: Path) -> tuple[float, str]:
    """RunPodSandbox -> PullImage (cached) -> CreateContainer -> StartContainer."""
    cfg = pod_config(log_dir)
    with Timer() as t:
        pod = c.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        c.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image),
                                             sandbox_config=cfg))
        cid = c.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod, config=container_config(image), sandbox_config=cfg)).container_id
        c.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return t.seconds, pod


def start_pod_with_sleep(c: CriClient, image: str, log_dir: Path) -> str:
    cfg = pod_config(log_dir)
    pod = c.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    cid = c.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=container_config(image), sandbox_config=cfg)).container_id
    c.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    return pod


def concurrent_pods(c: CriClient, image: str, log_dir: Path, count: int, parallel: int
                    ) -> tuple[float, list[str]]:
    with Timer() as t, ThreadPoolExecutor(parallel) as pool:
        pods = list(pool.map(lambda _: start_pod_with_sleep(c, image, log_dir), range(count)))
    return t.seconds, pods


def remove_pods(c: CriClient, pods: list[str], parallel: int = 8) -> None:
    def rm(pod: str) -> None:
        c.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        c.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(rm, pods))


def cold_pull(c: CriClient, image: str) -> float:
    with Timer() as t:
        ref = c.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image))).image_ref
    c.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=ref)))
    return t.seconds


LISTS = ("ListPodSandbox", "ListContainers", "ListContainerStats", "ListPodSandboxStats")
FLOOR = "Version"   # timed beside the Lists: what any call costs through this client


def list_latencies(c: CriClient, calls: int) -> dict[str, list[float]]:
    """Each of the List calls kubelet polls, `calls` times, interleaved (one of each per
    round, so that the machine's noise hits all four); seconds per call. (containerd
    answers ListPodSandboxStats only for pods with a cgroup_parent, which kubelet always
    sets and the bench's pods do not.)"""
    requests = {FLOOR: api_pb2.VersionRequest(),
                "ListPodSandbox": api_pb2.ListPodSandboxRequest(),
                "ListContainers": api_pb2.ListContainersRequest(),
                "ListContainerStats": api_pb2.ListContainerStatsRequest(),
                "ListPodSandboxStats": api_pb2.ListPodSandboxStatsRequest()}
    out: dict[str, list[float]] = {}
    for name in (FLOOR, *LISTS):  # warm-up, not counted; a List it cannot answer is left out
        try:
            getattr(c, name)(requests[name])
            out[name] = []
        except grpc.RpcError as exc:
            print(f"  {name}: {exc.code().name} {exc.details()}; not measured", flush=True)
    for _ in range(calls):
        for name in out:
            method = getattr(c, name)
            started = time.perf_counter()
            method(requests[name])
            out[name].append(time.perf_counter() - started)
    return out


def poll_like_kubelet(c: CriClient, seconds: float,
                      stop: threading.Event | None = None) -> None:
    """kubelet's relist (pods, containers) and its stats poll, once a second, for `seconds`
    (or until `stop` is set)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        started = time.monotonic()
        c.ListPodSandbox(api_pb2.ListPodSandboxRequest())
        c.ListContainers(api_pb2.ListContainersRequest())
        c.ListContainerStats(api_pb2.ListContainerStatsRequest())
        pause = max(0.0, 1.0 - (time.monotonic() - started))
        if stop is not None:
            stop.wait(pause)
        else:
            time.sleep(pause)


def exec_probes_under_load(c: CriClient, pods: list[str], probes: int,
                           interval: float = 0.5) -> list[float]:
    """ExecSync `true` (an exec probe) into the pods' containers in turn, one every `interval`
    seconds, while another client thread polls like kubelet (poll_like_kubelet); seconds per
    call."""
    containers = [ctr.id for ctr in c.ListContainers(api_pb2.ListContainersRequest()).containers
                  if ctr.pod_sandbox_id in set(pods)
                  and ctr.state == api_pb2.CONTAINER_RUNNING]
    stop = threading.Event()
    poller = threading.Thread(target=poll_like_kubelet, args=(c, 3600.0, stop), daemon=True)
    poller.start()
    out: list[float] = []
    try:
        for i in range(probes):
            started = time.perf_counter()
            c.ExecSync(api_pb2.ExecSyncRequest(container_id=containers[i % len(containers)],
                                               cmd=["true"], timeout=10))
            out.append(time.perf_counter() - started)
            time.sleep(max(0.0, interval - (time.perf_counter() - started)))
    finally:
        stop.set()
        poller.join()
    return out
