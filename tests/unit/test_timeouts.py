"""pycri_common.timeouts: the factor an emulated host (the VM leg) stretches internal waits by."""
from __future__ import annotations

import pytest

from pycri_common import timeouts


@pytest.mark.parametrize(("value", "expected"), [
    (None, 1.0), ("", 1.0), ("20", 20.0), ("2.5", 2.5), ("0.1", 1.0), ("-3", 1.0), ("x", 1.0)])
def test_scale_from_environment(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                expected: float) -> None:
    if value is None:
        monkeypatch.delenv("PYCRI_TIMEOUT_SCALE", raising=False)
    else:
        monkeypatch.setenv("PYCRI_TIMEOUT_SCALE", value)
    assert timeouts._scale() == expected


def test_scaled_multiplies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "SCALE", 20.0)
    assert timeouts.scaled(15.0) == 300.0
