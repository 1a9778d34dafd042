"""Medians, p90s, ratios; the table, the JSON file and the PNG chart."""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

# figure -> (unit, target ratio pycri/containerd or None)
TARGETS: dict[str, tuple[str, float | None]] = {
    "runp": ("ms", 0.7), "create": ("ms", None), "start": ("ms", None),
    "create+start": ("ms", 0.7), "stop": ("ms", None), "stopp": ("ms", None),
    "rmp": ("ms", None), "stopp+rmp": ("ms", None),
    "runp (pod only)": ("ms", None), "stopp (pod only)": ("ms", None),
    "rmp (pod only)": ("ms", None),
    "execsync": ("ms", 1.0), "pod-to-running": ("ms", 0.7), "cold pull 50MB": ("s", 1.0),
}

# Absolute p50 targets (ms) of issue #18 for figures without a pod count.
ABSOLUTE_TARGETS_MS: dict[str, float] = {
    "runp": 40.0, "stopp": 40.0, "create+start": 25.0, "runp (pod only)": 40.0,
    "stopp (pod only)": 40.0}


# ExecSync p50 with kubelet's polls running beside it (issue #18)
EXEC_UNDER_LOAD_TARGET_MS = 10.0


# The Lists kubelet polls (bench.workloads.LISTS) and their absolute targets (issue #18):
# p50 in ms by pod count; the ratio to containerd is shown beside.
LIST_TARGETS_MS: dict[str, dict[int, float]] = {
    "ListPodSandbox": {50: 1.0, 250: 2.0}, "ListContainers": {50: 1.0, 250: 2.0},
    "ListContainerStats": {250: 50.0}, "ListPodSandboxStats": {250: 50.0}}
LIST_POINT_MIN = 50   # Lists are timed at the scale points from this many pods up


def scale_points(pods: int) -> list[int]:
    """The pod counts memory (and, from LIST_POINT_MIN, the Lists) are measured at."""
    return sorted({min(10, pods), min(50, pods), pods})


def add_run_figures(pods: int, parallel: int, idle: float, exec_probes: int = 0) -> str:
    """Figures whose names carry the run's settings; returns the concurrency figure's name."""
    concurrent = f"{pods} pods ({parallel} at a time)"
    TARGETS[concurrent] = ("s", None)
    for n in scale_points(pods):
        TARGETS[f"PSS/pod @{n}"] = ("MiB", 1.0)
    for n in scale_points(pods):
        if n >= LIST_POINT_MIN:
            for name in ("Version", *LIST_TARGETS_MS):
                TARGETS[f"{name} @{n}"] = ("ms", None)
    TARGETS[f"idle CPU {int(idle)}s, {pods} pods"] = ("s", 1.0)
    if exec_probes:
        figure = f"execsync, polled @{pods}"
        TARGETS[figure] = ("ms", 1.0)
        ABSOLUTE_TARGETS_MS[figure] = EXEC_UNDER_LOAD_TARGET_MS
    return concurrent
SCALE = {"ms": 1000.0, "s": 1.0, "MiB": 1.0 / (1024 * 1024)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def p90(values: list[float]) -> float:
    return percentile(values, 0.9)


def absolute_target(figure: str) -> float | None:
    """The absolute p50 target (in the figure's unit) of a figure, if it has one."""
    if figure in ABSOLUTE_TARGETS_MS:
        return ABSOLUTE_TARGETS_MS[figure]
    name, _, at = figure.partition(" @")
    targets = LIST_TARGETS_MS.get(name)
    return targets.get(int(at)) if targets and at.isdigit() else None


def summarise(samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for figure, (unit, target) in TARGETS.items():
        a = samples.get("pycri", {}).get(figure)
        b = samples.get("containerd", {}).get(figure) or []
        if not a:
            continue
        scale = SCALE[unit]
        ma = statistics.median(a)
        mb = statistics.median(b) if b else float("nan")
        ratio = ma / mb if b and mb else float("nan")
        row = {"figure": figure, "unit": unit, "n": len(a),
               "pycri_median": ma * scale, "pycri_p90": p90(a) * scale,
               "pycri_p95": percentile(a, 0.95) * scale,
               "containerd_median": mb * scale, "containerd_p90": (p90(b) if b else mb) * scale,
               "containerd_p95": (percentile(b, 0.95) if b else mb) * scale,
               "ratio": ratio, "target": target,
               "meets_target": None if target is None or not b else ratio <= target}
        absolute = absolute_target(figure)
        if absolute is not None:
            row["absolute_target"] = absolute
            row["meets_absolute_target"] = ma * scale <= absolute
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'figure':<24} {'unit':<4} {'n':>3} {'pycri med':>10} {'p90':>9} "
            f"{'ctrd med':>10} {'p90':>9} {'ratio':>6} {'target':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        target = "" if r["target"] is None else f"<={r['target']:.1f}" + (
            " ok" if r["meets_target"] else " MISS")
        if "absolute_target" in r:
            target = f"p50<={r['absolute_target']:g}" + (
                " ok" if r["meets_absolute_target"] else " MISS")
        lines.append(f"{r['figure']:<24} {r['unit']:<4} {r['n']:>3} {r['pycri_median']:>10.2f} "
                     f"{r['pycri_p90']:>9.2f} {r['containerd_median']:>10.2f} "
                     f"{r['containerd_p90']:>9.2f} {r['ratio']:>6.2f} {target:>7}")
    return "\n".join(lines)


def cgroup_move_ms(rounds: int = 3) -> float:
    """Median time of moving a process into a fresh cgroup after an idle moment, what every
    container create and exec without clone3(CLONE_INTO_CGROUP) pays: an RCU grace period
    (several ms) unless the cgroup threadgroup lock favours writers (a hierarchy mounted with
    favordynmods, which a kernel never turns off again until reboot), then ~0.1 ms."""
    import os
    import time

    from runtime.cgroups import mode as cgmode
    root = cgmode.CGROUP_ROOT if cgmode.detect_mode() == "v2" else f"{cgmode.CGROUP_ROOT}/pids"
    probe = f"{root}/pycri-bench-move-probe"
    os.makedirs(probe, exist_ok=True)
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    times = []
    try:
        for _ in range(rounds):
            time.sleep(0.3)
            started = time.perf_counter()
            with open(f"{probe}/cgroup.procs", "w") as f:
                f.write(str(child))
            times.append((time.perf_counter() - started) * 1000)
            with open(f"{root}/cgroup.procs", "w") as f:
                f.write(str(child))
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
        os.rmdir(probe)
    return statistics.median(times)


def machine() -> dict[str, str]:
    def run(*cmd: str) -> str:
        try:
            return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), "?")
    return {"cpus": run("nproc"), "cpu_model": cpu, "memory_kib": mem,
            "cgroup_move_ms": f"{cgroup_move_ms():.2f}",
            "kernel": platform.release(), "python": platform.python_version(),
            "containerd": run("containerd", "--version"), "runc": run("runc", "--version")
            .splitlines()[0] if run("runc", "--version") else "?"}


def write(out_dir: Path, rows: list[dict[str, Any]], samples: dict[str, Any],
          settings: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "settings": settings, "summary": rows, "samples": samples}
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "results.txt").write_text(
        "machine: " + json.dumps(doc["machine"]) + "\n" + "settings: " + json.dumps(settings)
        + "\n\n" + table(rows) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r["figure"] for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = ["tab:green" if r["meets_target"] in (True, None) and r["ratio"] <= 1 else
              ("tab:orange" if r["meets_target"] in (True, None) else "tab:red") for r in rows]
    ax.barh(names, ratios, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    for i, r in enumerate(rows):
        if r["target"] is not None:
            ax.plot([r["target"]], [i], marker="|", markersize=14, color="black")
    ax.set_xlabel("pycri / containerd (median; lower is better; | = target)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(out_dir / "ratios.png", dpi=110)


def publish(args: Any, samples: dict[str, Any]) -> list[dict[str, Any]]:
    """Summarises samples, prints the table and writes it with the run's settings to
    args.out; the rows, for a caller that prints more."""
    rows = summarise(samples)
    print()
    print(table(rows))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write(args.out, rows, json.loads(json.dumps(samples)), settings)
    print(f"\nwritten to {args.out}/results.json, results.txt, ratios.png")
    return rows
