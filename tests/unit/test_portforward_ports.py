"""The port header of a port-forward stream: plain decimal digits only."""
from __future__ import annotations

import pytest

from cri_server.streaming.portforward import parse_port


@pytest.mark.parametrize(("value", "port"), [("80", 80), ("1", 1), ("65535", 65535),
                                             ("080", 80)])
def test_decimal_ports_are_read(value: str, port: int) -> None:
    assert parse_port(value) == port


@pytest.mark.parametrize("value", ["", "0", "65536", "+80", "-1", " 80", "80 ", "8_0", "0x50",
                                   "\u0668\u0660", "123456", "1e3"])
def test_anything_else_is_refused(value: str) -> None:
    assert parse_port(value) is None
