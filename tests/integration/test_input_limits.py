"""Limits on what a pod or container may carry, through the real gRPC API: labels and
annotations (Kubernetes' rules), the List budget that keeps List responses within the 16 MiB
CRI clients accept, and huge page sizes (only those the kernel offers)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from cri_server import host_features, labels
from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.cri_client import CriClient

POD_NAME_253 = ".".join(["p" * 63] * 3) + "." + "q" * 61
CLIENT_LIMIT = 16 * 1024 * 1024   # kubelet's and crictl's max receive message size
BAD_PAGE_SIZE = "/../../../../tmp/x"


@pytest.fixture
def kubelet_client(daemon) -> Iterator[CriClient]:  # type: ignore[no-untyped-def]
    """A client that, like kubelet, accepts responses of at most 16 MiB."""
    client = CriClient(str(daemon.socket), max_receive=CLIENT_LIMIT)
    yield client
    client.close()


def _pod_refused(cri: CriClient, config: api_pb2.PodSandboxConfig) -> grpc.RpcError:
    try:
        pod_id = pods.run_pod(cri, config)
    except grpc.RpcError as exc:
        return exc
    pods.stop_and_remove(cri, pod_id)
    raise AssertionError("RunPodSandbox accepted the pod")


def _container_refused(env: ContainerEnv, config: api_pb2.ContainerConfig) -> grpc.RpcError:
    try:
        env.create(config)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("CreateContainer accepted the container")


def _invalid(exc: grpc.RpcError, *words: str) -> None:
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.code(), exc.details()[:300])
    for word in words:
        assert word in exc.details(), exc.details()[:300]


def test_the_reported_label_and_annotation_floods_are_refused(cri, kubelet_client) -> None:  # type: ignore[no-untyped-def]
    many = {f"label-{i}": "v" * 90 for i in range(100_000)}             # 10 MB of labels
    _invalid(_pod_refused(cri, pods.pod_config(labels=many)), "PodSandboxConfig.labels")
    huge = {"big": "x" * (8 << 20)}                                      # one 8 MB annotation
    _invalid(_pod_refused(cri, pods.pod_config(annotations=huge)), "PodSandboxConfig.annotations",
             "8388611 bytes")
    _invalid(_pod_refused(cri, pods.pod_config(labels={"a/b/c": "x"})), "label key 'a/b/c'")
    kubelet_client.ListPodSandbox(api_pb2.ListPodSandboxRequest())


def test_what_kubelet_sends_is_accepted_and_kept(cri, pod_ids) -> None:  # type: ignore[no-untyped-def]
    pod_labels = {"io.kubernetes.pod.name": POD_NAME_253, "io.kubernetes.pod.namespace": "default",
                  "io.kubernetes.pod.uid": "6f0c6c2e-1c1b-4c6e-9a65-6f1b8f3f3a11",
                  "app.kubernetes.io/name": "web", "empty": ""}
    pod_annotations = {"kubernetes.io/config.seen": "2024-05-01T10:00:00.123456789Z",
                       "kubernetes.io/config.source": "api",
                       "big.example.com/blob": "x" * (labels.TOTAL_ANNOTATION_SIZE_LIMIT - 30)}
    pod_id = pods.run_pod(cri, pods.pod_config(labels=pod_labels, annotations=pod_annotations))
    pod_ids.append(pod_id)
    item = next(p for p in cri.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items
                if p.id == pod_id)
    assert dict(item.labels) == pod_labels and dict(item.annotations) == pod_annotations


@pytest.fixture
def pod_ids(cri) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    ids: list[str] = []
    yield ids
    pods.remove_all(cri, ids)


def test_container_labels_and_annotations_are_checked(container_env: ContainerEnv) -> None:
    env = container_env
    _invalid(_container_refused(env, env.config(labels={"k": "linux/amd64"})),
             "ContainerConfig.labels", "'k'")
    _invalid(_container_refused(env, env.config(annotations={"x" * 64: ""})),
             "ContainerConfig.annotations")
    cfg = env.config()
    cfg.image.annotations["big"] = "x" * (1 << 20)
    _invalid(_container_refused(env, cfg), "ContainerConfig.image.annotations")
    cid = env.create(env.config(
        labels={"io.kubernetes.container.name": "c", "io.kubernetes.pod.name": POD_NAME_253},
        annotations={"io.kubernetes.container.preStopHandler": '{"exec":{"command":["sh"]}}',
                     # a key shaped like kubelet's CDI ones (those are resolved: test_cdi.py)
                     "devices.example.com/vendor_gpu0": "vendor.com/gpu=0"}))
    env.remove(cid)


def _biggest_container(env: ContainerEnv, n: int) -> api_pb2.ContainerConfig:
    """A container at the per-object limits: ~240 KB of labels, 272 KiB of annotations."""
    return env.config(name=f"big-{n}", labels={f"l{i:05d}": "v" * 63 for i in range(3500)},
                      annotations={"a": "x" * (labels.MAX_ANNOTATIONS_BYTES - 1)})


def test_lists_stay_within_what_kubelet_accepts(container_env: ContainerEnv,
                                                kubelet_client: CriClient) -> None:
    env = container_env
    made: list[str] = []
    refused: grpc.RpcError | None = None
    try:
        for n in range(40):    # 40 x 530 KB would be a 21 MB ListContainers
            try:
                made.append(env.create(_biggest_container(env, n)))
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None, "40 containers of 530 KB were accepted"
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()[:300]
        assert "16777216 bytes CRI clients accept" in refused.details()
        assert len(made) >= 15
        listed = kubelet_client.ListContainers(api_pb2.ListContainersRequest())
        assert {c.id for c in listed.containers} >= set(made)
        kubelet_client.ListPodSandboxStats(api_pb2.ListPodSandboxStatsRequest())
        kubelet_client.ListContainerStats(api_pb2.ListContainerStatsRequest())
    finally:
        for cid in made:
            env.remove(cid)
    env.remove(env.create(_biggest_container(env, 99)))  # the budget is freed on removal


def _bad_hugepages() -> api_pb2.LinuxContainerResources:
    return api_pb2.LinuxContainerResources(
        hugepage_limits=[api_pb2.HugepageLimit(page_size=BAD_PAGE_SIZE, limit=2 << 20)])


def _hugepage_refused(exc: grpc.RpcError) -> None:
    offered = ", ".join(host_features.hugepage_sizes()) or "none"
    _invalid(exc, repr(BAD_PAGE_SIZE), f"(offered: {offered})")


def test_hugepage_sizes_the_kernel_does_not_offer_are_refused(container_env: ContainerEnv,
                                                              cri) -> None:  # type: ignore[no-untyped-def]
    env = container_env
    cfg = env.config()
    cfg.linux.resources.CopyFrom(_bad_hugepages())
    _hugepage_refused(_container_refused(env, cfg))
    cid = env.create(env.config())
    try:
        update: Any = api_pb2.UpdateContainerResourcesRequest(container_id=cid,
                                                               linux=_bad_hugepages())
        with pytest.raises(grpc.RpcError) as err:
            cri.UpdateContainerResources(update)
        _hugepage_refused(err.value)
    finally:
        env.remove(cid)
    pod = pods.pod_config()
    pod.linux.resources.CopyFrom(_bad_hugepages())
    _hugepage_refused(_pod_refused(cri, pod))
