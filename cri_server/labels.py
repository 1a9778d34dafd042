"""Labels and annotations of pods and containers, checked as Kubernetes checks them.

- A key is a qualified name: an optional prefix (a DNS subdomain of at most 253 characters)
  and '/', then a name of at most 63 characters of [A-Za-z0-9._-] that starts and ends with a
  letter or digit. Annotation keys are checked lower-cased, as Kubernetes does.
- A label value is empty or at most 63 characters of the same alphabet, starting and ending
  with a letter or digit. kubelet's own io.kubernetes.pod.name label carries the pod's name,
  a DNS subdomain of up to 253 characters, and is allowed that length.
- All annotations of one object (keys and values) take at most 272 KiB: Kubernetes'
  TotalAnnotationSizeLimitB (256 KiB) for the object's own, plus 16 KiB for what kubelet adds
  itself (kubernetes.io/config.* on pods; hash, restart count, termination message, preStop
  handler and ports on containers). Kubernetes bounds labels only through the size of the
  object; pycri applies the same 256 KiB to all labels of one object.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from pycri_common.errors import InvalidArgument
from pycri_common.text import shorten

MAX_NAME = 63
MAX_PREFIX = 253
MAX_LABEL_VALUE = 63
TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024   # apimachinery TotalAnnotationSizeLimitB
KUBELET_ANNOTATION_ALLOWANCE = 16 * 1024
MAX_ANNOTATIONS_BYTES = TOTAL_ANNOTATION_SIZE_LIMIT + KUBELET_ANNOTATION_ALLOWANCE
MAX_LABELS_BYTES = 256 * 1024
# Labels kubelet fills with an object name longer than a label value may be.
_NAME_LABELS = {"io.kubernetes.pod.name": 253}

_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = ("at most 63 characters of letters, digits, '-', '_' and '.', starting and ending "
              "with a letter or digit")


def _size(entries: Mapping[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in entries.items())


def key_error(key: str) -> str | None:
    """Why key is not a qualified name (None when it is)."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix:
            return "the prefix before '/' is empty"
        if len(prefix) > MAX_PREFIX or not _DNS_SUBDOMAIN.fullmatch(prefix):
            return (f"the prefix must be a DNS subdomain of at most {MAX_PREFIX} characters "
                    "(lower-case letters, digits, '-' and '.')")
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        return f"the name (after an optional 'prefix/') must have {_NAME_RULE}"
    return None


def check_labels(field: str, labels: Mapping[str, str]) -> None:
    """InvalidArgument naming the field (e.g. "PodSandboxConfig.labels") and the entry."""
    for key, value in labels.items():
        why = key_error(key)
        if why is not None:
            raise InvalidArgument(f"{field}: label key {shorten(key)} is not valid: {why}")
        limit = _NAME_LABELS.get(key, MAX_LABEL_VALUE)
        if value and (len(value) > limit or not _NAME.fullmatch(value)):
            raise InvalidArgument(
                f"{field}: the value {shorten(value)} of label {key!r} is not valid: it must be "
                f"empty or have {_NAME_RULE.replace('63', str(limit))}")
    size = _size(labels)
    if size > MAX_LABELS_BYTES:
        raise InvalidArgument(f"{field}: the labels take {size} bytes; at most "
                              f"{MAX_LABELS_BYTES} bytes (keys and values) are allowed")


def check_annotations(field: str, annotations: Mapping[str, str]) -> None:
    """InvalidArgument naming the field (e.g. "ContainerConfig.annotations")."""
    for key in annotations:
        why = key_error(key.lower())
        if why is not None:
            raise InvalidArgument(f"{field}: annotation key {shorten(key)} is not valid: {why}")
    size = _size(annotations)
    if size > MAX_ANNOTATIONS_BYTES:
        raise InvalidArgument(
            f"{field}: the annotations take {size} bytes; at most {MAX_ANNOTATIONS_BYTES} bytes "
            f"(keys and values) are allowed (Kubernetes allows {TOTAL_ANNOTATION_SIZE_LIMIT} for "
            "an object's own annotations)")
