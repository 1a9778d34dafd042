"""Labels and annotations: Kubernetes' rules, accepting everything kubelet and critest send."""
from __future__ import annotations

import json

import pytest

from cri_server import labels
from pycri_common.errors import InvalidArgument

POD_NAME = ".".join(["a" * 63] * 3) + "." + "b" * 61   # 253 characters, a DNS subdomain
KUBELET_POD_LABELS = {"io.kubernetes.pod.name": POD_NAME,
                      "io.kubernetes.pod.namespace": "kube-system",
                      "io.kubernetes.pod.uid": "6f0c6c2e-1c1b-4c6e-9a65-6f1b8f3f3a11",
                      "app.kubernetes.io/name": "web", "tier": "", "pod-template-hash": "5d8"}
KUBELET_CONTAINER_ANNOTATIONS = {
    "io.kubernetes.container.hash": "a3b1c2d4", "io.kubernetes.container.restartCount": "0",
    "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
    "io.kubernetes.container.terminationMessagePolicy": "File",
    "io.kubernetes.pod.terminationGracePeriod": "30",
    "io.kubernetes.container.preStopHandler": json.dumps(
        {"exec": {"command": ["/bin/sh", "-c", "sleep 5; nginx -s quit"]}}),
    "io.kubernetes.container.ports": json.dumps([{"name": "http", "containerPort": 80,
                                                  "protocol": "TCP"}]),
    "cdi.k8s.io/nvidia-device-plugin_gpu0": "nvidia.com/gpu=0",
}
KUBELET_POD_ANNOTATIONS = {
    "kubernetes.io/config.seen": "2024-05-01T10:00:00.123456789Z",
    "kubernetes.io/config.source": "api",
    "kubectl.kubernetes.io/last-applied-configuration": json.dumps({"kind": "Pod"}) * 100,
    "Example.COM/Mixed-Case": "annotation keys are checked lower-cased",
}
CRITEST_LABELS = {"foo": "bar", "io.kubernetes.container.name":
                  "container-with-attributes-0d6c1f7e-4f6b-4f0e-9a55-1c2b3d4e5f60",
                  "io.kubernetes.pod.name":
                  "PodSandbox-with-attributes-0d6c1f7e-4f6b-4f0e-9a55-1c2b3d4e5f60",
                  "io.kubernetes.pod.uid": "cri-test-uid0d6c1f7e-4f6b-4f0e-9a55-1c2b3d4e5f60"}


def test_what_kubelet_and_critest_send_is_accepted() -> None:
    for entries in (KUBELET_POD_LABELS, CRITEST_LABELS):
        labels.check_labels("PodSandboxConfig.labels", entries)
    for entries in (KUBELET_CONTAINER_ANNOTATIONS, KUBELET_POD_ANNOTATIONS, {"abc": "def"}):
        labels.check_annotations("ContainerConfig.annotations", entries)


def test_annotations_at_the_kubernetes_limit_plus_kubelets_own_are_accepted() -> None:
    own = {"big": "x" * (labels.TOTAL_ANNOTATION_SIZE_LIMIT - 3)}
    labels.check_annotations("PodSandboxConfig.annotations", {**own, **KUBELET_POD_ANNOTATIONS})


@pytest.mark.parametrize("key, why", [
    ("", "name is empty"), ("/name", "prefix before '/' is empty"),
    ("a/b/c", "DNS subdomain"), ("Example.com/x", "DNS subdomain"),
    ("x" * 254 + "/n", "DNS subdomain"), ("p/" + "n" * 64, "at most 63"),
    ("n" * 64, "at most 63"), ("-lead", "starting and ending"), ("trail.", "starting"),
    ("sp ace", "letters, digits"), ("p/", "name is empty"), ("ünï", "letters")])
def test_bad_label_keys(key: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        labels.check_labels("PodSandboxConfig.labels", {key: "v"})
    assert str(err.value).startswith("PodSandboxConfig.labels: label key ") and why in str(err.value)


@pytest.mark.parametrize("value", ["v" * 64, "linux/amd64", "-x", "x_", "a b", "\n"])
def test_bad_label_values(value: str) -> None:
    with pytest.raises(InvalidArgument, match=r"ContainerConfig.labels: the value .* of label 'k'"):
        labels.check_labels("ContainerConfig.labels", {"k": value})


def test_only_the_pod_name_label_may_be_longer() -> None:
    with pytest.raises(InvalidArgument, match="at most 253"):
        labels.check_labels("l", {"io.kubernetes.pod.name": POD_NAME + "x"})
    with pytest.raises(InvalidArgument, match="at most 63"):
        labels.check_labels("l", {"io.kubernetes.pod.namespace": "n" * 64})


def test_bad_annotation_key_names_the_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^ContainerConfig.image.annotations: annotation key"):
        labels.check_annotations("ContainerConfig.image.annotations", {"a b": ""})


def test_the_reported_floods_are_refused() -> None:
    many = {f"label-{i}": "v" * 50 for i in range(100_000)}       # 100 000 labels, 6 MB
    with pytest.raises(InvalidArgument, match=r"labels take \d+ bytes; at most 262144"):
        labels.check_labels("PodSandboxConfig.labels", many)
    with pytest.raises(InvalidArgument, match=r"annotations take 8388609 bytes; at most 278528"):
        labels.check_annotations("PodSandboxConfig.annotations", {"a": "x" * (8 << 20)})


def test_error_messages_stay_short() -> None:
    with pytest.raises(InvalidArgument) as err:
        labels.check_labels("l", {"k" * 1_000_000: "v"})
    assert len(str(err.value)) < 400
