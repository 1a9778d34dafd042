"""RunPodSandbox, StopPodSandbox and RemovePodSandbox on their own, pycri against containerd.

    python3 -m bench.sandbox [--rounds 30] [--no-containerd] [--out DIR]

Each round runs, on each runtime in turn (A B A B ...): a pod without containers through
its life (critest's PodSandbox benchmark: the "(pod only)" figures), then a pod with one
busybox `sleep` whose container is stopped before the pod, as kubelet does (runp, create,
start, execsync, stop, stopp, rmp). One warm-up round is not counted. Same images, CNI
network (bridge + host-local + portmap, no port mappings) and client for both runtimes.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import images as bench_images
from bench import report, workloads
from bench.run import Samples, tear_down
from bench.runtimes import Containerd, Pycri, make_base, write_cni_conf
from proto import api_pb2
from tests.support.registry import Registry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-containerd", action="store_true",
                    help="pycri only (absolute figures, no ratios)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent / "results" / "sandbox")
    args = ap.parse_args(argv)

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
        clients = {rt.name: rt.start() for rt in runtimes}
        for rt in runtimes:
            c = clients[rt.name]
            for image in (imgs.busybox, imgs.pause):
                c.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
            workloads.pod_round(c, log_dir)                        # warm-up, not counted
            workloads.lifecycle_round(c, imgs.busybox, log_dir)
        print(f"{args.rounds} rounds ...", flush=True)
        for _ in range(args.rounds):
            for rt in runtimes:
                c = clients[rt.name]
                for figures in (workloads.pod_round(c, log_dir),
                                workloads.lifecycle_round(c, imgs.busybox, log_dir)):
                    for k, v in figures.items():
                        samples[rt.name][k].append(v)
    finally:
        tear_down(runtimes, registry, base)

    report.publish(args, samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
