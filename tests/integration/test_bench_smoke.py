"""One short round of the benchmark, so bench/ keeps working (figures are not judged here)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("containerd") is None or shutil.which("runc") is None,
                                reason="the benchmark compares against containerd + runc")


def test_bench_runs_one_round_against_both_runtimes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--rounds", "1", "--pods", "2", "--parallel", "2",
         "--idle", "1", "--pull-rounds", "1", "--exec-probes", "2", "--out", str(tmp_path)],
        cwd=REPO_ROOT, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    figures = {row["figure"]: row for row in doc["summary"]}
    for name in ("runp", "create+start", "execsync", "pod-to-running", "cold pull 50MB",
                 "2 pods (2 at a time)", "PSS/pod @2", "idle CPU 1s, 2 pods",
                 "execsync, polled @2"):
        assert name in figures, (name, sorted(figures))
        if name.startswith("PSS"):  # pycri's monitor predates the base: growth only, +/- noise
            assert figures[name]["containerd_median"] > 0
            assert abs(figures[name]["pycri_median"]) < 50
        elif not name.startswith("idle"):  # CPU ticks are 10 ms: a quiet second can read 0
            assert figures[name]["pycri_median"] > 0 and figures[name]["containerd_median"] > 0
    assert (tmp_path / "results.txt").read_text().count("ratio") == 1
    assert float(doc["machine"]["cgroup_move_ms"]) > 0
