"""The Lists kubelet polls, one checkout against another, over the same running pods.

    python3 -m bench.lists_ab --before DIR [--pods 250] [--list-calls 60] [--turns 2]

DIR is another pycri checkout (e.g. `git worktree add /tmp/before main`). One daemon runs
at a time on the same root/state dirs: pods outlive their daemon, so the pods are started
once (by the `before` daemon) and each turn restarts the daemon on `before`, then on this
checkout, and times --list-calls calls of Version, ListPodSandbox, ListContainers,
ListContainerStats and ListPodSandboxStats (p50/p90 of the wall time through the same
client), with the daemon's CPU time per call beside them (its utime+stime over the calls:
less sensitive to a shared machine's load than wall time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import tests.support.daemon as daemon_mod
from bench import images as bench_images
from bench import workloads
from bench.run import tear_down
from bench.runtimes import cpu_seconds, make_base, write_cni_conf
from proto import api_pb2
from tests.support.registry import Registry

HERE = Path(__file__).resolve().parents[1]


def _daemon(base: Path, tree: Path) -> daemon_mod.PycriDaemon:
    daemon_mod.REPO_ROOT = tree   # PycriDaemon runs `python -m cri_server` from REPO_ROOT
    return daemon_mod.PycriDaemon(base=base / "pycri", env={"PYTHONPATH": str(tree)}, config={
        "log_level": "info", "cni": {"conf_dir": str(base / "cni")},
        "cgroup_parent": "/pycri-bench"})


def _turn(d: daemon_mod.PycriDaemon, calls: int) -> dict[str, tuple[float, float, float]]:
    """name -> (p50 ms, p90 ms, daemon CPU ms per call)"""
    assert d.proc is not None
    out: dict[str, tuple[float, float, float]] = {}
    for name, values in workloads.list_latencies(d.c, 1).items():   # warm-up
        del values
        method = getattr(d.c, name)
        request = getattr(api_pb2, name + "Request")()
        before = cpu_seconds([d.proc.pid])
        walls = []
        for _ in range(calls):
            started = time.perf_counter()
            method(request)
            walls.append(time.perf_counter() - started)
        cpu = (cpu_seconds([d.proc.pid]) - before) / calls
        walls.sort()
        out[name] = (statistics.median(walls) * 1000, walls[int(len(walls) * 0.9)] * 1000,
                     cpu * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--pods", type=int, default=250)
    ap.add_argument("--list-calls", type=int, default=60)
    ap.add_argument("--turns", type=int, default=2)
    args = ap.parse_args(argv)
    base = make_base()
    registry = Registry().start()
    running: list[Any] = []
    pods: list[str] = []
    try:
        imgs = bench_images.build_and_push(registry.url, registry.host, 0)
        write_cni_conf(base / "cni", base / "ipam")
        d = _daemon(base, args.before.resolve()).start()
        running = [d]
        for image in (imgs.busybox, imgs.pause):
            d.c.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        print(f"{args.pods} pods ...", flush=True)
        pods = [workloads.start_pod_with_sleep(d.c, imgs.busybox, base / "logs")
                for _ in range(args.pods)]
        for turn in range(args.turns):
            for label, tree in (("before", args.before.resolve()), ("after", HERE)):
                running[0].stop()
                d = _daemon(base, tree).start()
                running = [d]
                time.sleep(1)
                print(f"turn {turn + 1} {label} ({args.pods} pods, load "
                      f"{os.getloadavg()[0]:.1f}):")
                for name, (p50, p90, cpu) in _turn(d, args.list_calls).items():
                    print(f"  {name:<22} p50 {p50:8.2f} ms  p90 {p90:8.2f} ms  "
                          f"daemon cpu {cpu:7.2f} ms/call", flush=True)
        workloads.remove_pods(running[0].c, pods)
        pods = []
    finally:
        if pods and running:
            workloads.remove_pods(running[0].c, pods)
        for d in running:
            d.stop()
        tear_down([], registry, base)
        daemon_mod.remove_empty_cgroup("/pycri-bench")
        daemon_mod.REPO_ROOT = HERE
    return 0


if __name__ == "__main__":
    sys.exit(main())
