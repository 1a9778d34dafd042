"""The Lists kubelet polls, and memory per pod, at growing pod counts; nothing else.

    python3 -m bench.lists [--pods 250] [--list-calls 200] [--no-containerd] [--out DIR]

The scale part of `bench.run` on its own (shorter): one busybox `sleep` per pod, started
until 10, 50 and --pods pods run; at each count the PSS the runtime added per pod and, from
50 pods up, --list-calls calls of ListPodSandbox, ListContainers, ListContainerStats and
ListPodSandboxStats each (p50/p90/p95). pycri and containerd run one after the other in
the same run, on the same images, network and client.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import images as bench_images
from bench import report
from bench.run import Samples, measure_scale, tear_down
from bench.runtimes import Containerd, Pycri, make_base, write_cni_conf
from proto import api_pb2
from tests.support.registry import Registry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pods", type=int, default=250)
    ap.add_argument("--list-calls", type=int, default=200)
    ap.add_argument("--no-containerd", action="store_true",
                    help="pycri only (absolute figures, no ratios)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "lists")
    args = ap.parse_args(argv)
    report.add_run_figures(args.pods, 1, 0)

    base = make_base()
    log_dir = base / "logs"
    samples: Samples = defaultdict(lambda: defaultdict(list))
    registry = Registry().start()
    runtimes: list[Any] = []
    try:
        imgs = bench_images.build_and_push(registry.url, registry.host, 0)
        cni_conf = base / "cni"
        write_cni_conf(cni_conf, base / "ipam")
        runtimes = [Pycri(base, cni_conf)]
        if not args.no_containerd:
            runtimes.append(Containerd(base, cni_conf, registry.host, imgs.pause))
        for rt in runtimes:
            c = rt.start()
            for image in (imgs.busybox, imgs.pause):
                c.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
            print(f"{rt.name}: {args.pods} pods ...", flush=True)
            measure_scale(rt, c, imgs.busybox, log_dir, args.pods, 0, samples, args.list_calls)
            rt.stop()
        runtimes = []
    finally:
        tear_down(runtimes, registry, base)

    rows = report.publish(args, samples)
    print()
    for r in rows:
        if r["unit"] == "ms":
            print(f"{r['figure']:<26} pycri p50 {r['pycri_median']:8.2f} p95 {r['pycri_p95']:8.2f}"
                  f"   containerd p50 {r['containerd_median']:8.2f} p95 {r['containerd_p95']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
