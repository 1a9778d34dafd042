"""hugepage_limits.page_size: only the sizes the kernel offers (the size names a cgroup file)."""
from __future__ import annotations

from pathlib import Path

import pytest

from cri_server import host_features, resources
from proto import api_pb2
from pycri_common.errors import InvalidArgument


def test_kernel_sizes_in_kubelet_format(tmp_path: Path) -> None:
    for name in ("hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB",
                 "hugepages-32768kB", "not-hugepages", "hugepages-xkB"):
        (tmp_path / name).mkdir()
    assert host_features.hugepage_sizes_in(str(tmp_path)) == ("64KB", "2MB", "32MB", "1GB")
    assert host_features.hugepage_sizes_in(str(tmp_path / "absent")) == ()


def _res(page_size: str) -> api_pb2.LinuxContainerResources:
    return api_pb2.LinuxContainerResources(
        hugepage_limits=[api_pb2.HugepageLimit(page_size=page_size, limit=2 << 20)])


@pytest.fixture
def offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_features, "hugepage_sizes", lambda: ("2MB", "1GB"))


@pytest.mark.usefixtures("offered")
def test_offered_size_is_accepted() -> None:
    assert resources.to_dict(_res("2MB"))["hugepage_limits"] == [
        {"page_size": "2MB", "limit": 2 << 20}]


@pytest.mark.usefixtures("offered")
@pytest.mark.parametrize("size", ["/../../../../tmp/x", "4MB", "2mb", "", "2MB.max"])
def test_other_sizes_are_refused_naming_value_and_offered(size: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        resources.to_dict(_res(size))
    assert repr(size) in str(err.value) and "offered: 2MB, 1GB" in str(err.value)


@pytest.mark.usefixtures("offered")
def test_pod_resources_are_checked_too() -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.overhead: .*'/x'"):
        resources.check("linux.overhead", _res("/x"))


def test_a_host_without_huge_pages_refuses_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_features, "hugepage_sizes", lambda: ())
    with pytest.raises(InvalidArgument, match=r"offered: none"):
        resources.to_dict(_res("2MB"))
