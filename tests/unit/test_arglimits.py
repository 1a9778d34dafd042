"""execve(2) size limits checked before a command line goes anywhere (runtime.arglimits)."""
from __future__ import annotations

import os

import pytest

from pycri_common.errors import InvalidArgument
from runtime import arglimits


def test_arg_max_follows_sysconf_within_the_kernel_bounds() -> None:
    n = arglimits.arg_max()
    assert arglimits.ARG_MAX_FLOOR <= n <= arglimits.ARG_MAX_CAP
    assert n == min(os.sysconf("SC_ARG_MAX"), arglimits.ARG_MAX_CAP)


def test_longest_single_string_is_accepted() -> None:
    arglimits.check_exec_size(["echo", "x" * (arglimits.MAX_ARG_STRLEN - 1)],
                              ["K=" + "v" * (arglimits.MAX_ARG_STRLEN - 3)], "test")


def test_one_byte_more_in_one_argument_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidArgument, match=r"^test: argument 1 is 131072 bytes") as exc:
        arglimits.check_exec_size(["echo", "é" * (arglimits.MAX_ARG_STRLEN // 2)], [], "test")
    assert len(str(exc.value)) < 200


def test_long_environment_entry_is_named_by_its_key() -> None:
    with pytest.raises(InvalidArgument, match=r"environment entry 'BIG' is 200004 bytes"):
        arglimits.check_exec_size(["true"], ["BIG=" + "v" * 200_000], "test")


def test_total_over_arg_max_is_refused() -> None:
    size = 100_000
    count = arglimits.arg_max() // size + 1
    with pytest.raises(InvalidArgument, match=r"accepts at most \d+ here \(ARG_MAX\)"):
        arglimits.check_exec_size(["echo"], ["K=" + "v" * size] * count, "test")
    arglimits.check_exec_size(["echo"] + ["a" * size] * (count - 2), [], "test")
