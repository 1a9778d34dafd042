"""pycri vs containerd, same workload, same client, same network and registry, in one run.

    python3 -m bench.run [--rounds 30] [--pods 50] [--idle 60] [--pull-rounds 5]
                         [--list-calls 200] [--out DIR]

Operations alternate between the runtimes (A B A B ...) so that the machine's
noise hits both. Prints a table of medians and p90s with the ratio
pycri/containerd, and writes results.json, results.txt and ratios.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import images as bench_images
from bench import report, workloads
from bench.runtimes import (
    BENCH_BRIDGE,
    Containerd,
    Pycri,
    cpu_seconds,
    make_base,
    process_tree_pss,
    write_cni_conf,
)
from proto import api_pb2
from tests.support.registry import Registry

Samples = dict[str, dict[str, list[float]]]


def measure_scale(rt: Any, c: Any, image: str, log_dir: Path, pods: int, idle: float,
                  samples: Samples, list_calls: int = 0, exec_probes: int = 0) -> None:
    """Memory per pod and the latency of the Lists kubelet polls at 10, 50 and `pods` pods,
    then idle CPU while polling like kubelet, then ExecSync probes while polling like it."""
    time.sleep(1)
    base = process_tree_pss(rt.runtime_pids())
    started: list[str] = []
    for target in report.scale_points(pods):
        while len(started) < target:
            started.append(workloads.start_pod_with_sleep(c, image, log_dir))
        time.sleep(1)
        per_pod = (process_tree_pss(rt.runtime_pids()) - base) / len(started)
        samples[rt.name][f"PSS/pod @{target}"] = [per_pod]
        if list_calls > 0 and target >= report.LIST_POINT_MIN:
            for name, values in workloads.list_latencies(c, list_calls).items():
                samples[rt.name][f"{name} @{target}"] = values
    if idle > 0:
        pids = rt.runtime_pids()
        before = cpu_seconds(pids)
        workloads.poll_like_kubelet(c, idle)
        samples[rt.name][f"idle CPU {int(idle)}s, {pods} pods"] = [cpu_seconds(pids) - before]
    if exec_probes > 0:
        samples[rt.name][f"execsync, polled @{len(started)}"] = \
            workloads.exec_probes_under_load(c, started, exec_probes)
    workloads.remove_pods(c, started)


def tear_down(runtimes: list[Any], registry: Registry, base: Path) -> None:
    """Stops every runtime (one failing does not keep the others running), the registry, the
    bench bridge and the work directory."""
    import shutil
    import subprocess
    for rt in runtimes:
        try:
            rt.stop()
        except Exception as exc:  # noqa: BLE001 - keep tearing down the others
            print(f"stopping {rt.name}: {exc}", file=sys.stderr)
    registry.stop()
    subprocess.run(["ip", "link", "del", BENCH_BRIDGE], check=False, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--pull-rounds", type=int, default=5)
    ap.add_argument("--list-calls", type=int, default=200,
                    help="calls of each List at 50 and --pods pods (0: do not measure)")
    ap.add_argument("--exec-probes", type=int, default=40,
                    help="ExecSync probes (one every 0.5 s) at --pods pods while another "
                         "thread polls like kubelet (0: do not measure)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--pycri-shim-python", default="",
                    help="interpreter for pycri's zygote and shims (config runtime.shim_python)")
    args = ap.parse_args(argv)
    concurrent_figure = report.add_run_figures(args.pods, args.parallel, args.idle,
                                               args.exec_probes)

    base = make_base()
    log_dir = base / "logs"
    samples: Samples = defaultdict(lambda: defaultdict(list))
    runtimes: list[Any] = []
    registry = Registry().start()
    try:
        print(f"building images, registry {registry.host} ...", flush=True)
        imgs = bench_images.build_and_push(registry.url, registry.host, args.pull_rounds)
        cni_conf = base / "cni"
        write_cni_conf(cni_conf, base / "ipam")
        runtimes = [Pycri(base, cni_conf, args.pycri_shim_python),
                    Containerd(base, cni_conf, registry.host, imgs.pause)]
        clients = {rt.name: rt.start() for rt in runtimes}
        for rt in runtimes:
            c = clients[rt.name]
            for image in (imgs.busybox, imgs.pause):
                c.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
            workloads.lifecycle_round(c, imgs.busybox, log_dir)  # warm-up, not counted

        print(f"lifecycle x{args.rounds} ...", flush=True)
        for _ in range(args.rounds):
            for rt in runtimes:
                for k, v in workloads.lifecycle_round(clients[rt.name], imgs.busybox,
                                                      log_dir).items():
                    samples[rt.name][k].append(v)
        print(f"pod-to-running x{args.rounds} ...", flush=True)
        for _ in range(args.rounds):
            for rt in runtimes:
                seconds, pod = workloads.pod_to_running(clients[rt.name], imgs.busybox, log_dir)
                samples[rt.name]["pod-to-running"].append(seconds)
                workloads.remove_pods(clients[rt.name], [pod])
        print(f"{args.pods} pods, {args.parallel} at a time ...", flush=True)
        for rt in runtimes:
            seconds, pods = workloads.concurrent_pods(clients[rt.name], imgs.busybox, log_dir,
                                                      args.pods, args.parallel)
            samples[rt.name][concurrent_figure].append(seconds)
            workloads.remove_pods(clients[rt.name], pods)
        print(f"cold pulls x{args.pull_rounds} ...", flush=True)
        for n, image in enumerate(imgs.big):   # who pulls an image first alternates
            for rt in (runtimes if n % 2 == 0 else runtimes[::-1]):
                samples[rt.name]["cold pull 50MB"].append(workloads.cold_pull(clients[rt.name], image))
        print(f"memory and idle cost ({args.pods} pods, {args.idle:.0f} s) ...", flush=True)
        for rt in runtimes:
            measure_scale(rt, clients[rt.name], imgs.busybox, log_dir, args.pods, args.idle,
                          samples, args.list_calls, args.exec_probes)
    finally:
        tear_down(runtimes, registry, base)

    report.publish(args, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
