"""Cold image pulls only, pycri vs containerd: the "cold pull 50MB" figure of bench.run alone.

    python3 -m bench.pull [--rounds 6] [--before CHECKOUT] [--pycri-only]

Builds `rounds` distinct 50 MB images (5 gzip layers of random data, bench/images.py), serves
them from a registry on 127.0.0.1 and pulls each once with each runtime, alternating which
goes first (A B, B A, ...), removing the image after each pull. Prints every pull, the
medians and the ratio pycri/containerd, and the runtime's CPU time per pull (less noisy than
the wall time on a busy machine). --before adds "pycri-before", the pycri of another
checkout (e.g. `git worktree add --detach /tmp/before main`), to the rotation: a
before/after of a change measured in the same run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from bench import images as bench_images
from bench import workloads
from bench.run import tear_down
from bench.runtimes import Containerd, Pycri, cpu_seconds, make_base, write_cni_conf
from proto import api_pb2
from tests.support.registry import Registry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pycri-only", action="store_true", help="do not start containerd")
    ap.add_argument("--before", type=Path, help="another checkout to compare, as pycri-before")
    args = ap.parse_args(argv)

    base = make_base()
    runtimes: list[Any] = []
    registry = Registry().start()
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        print(f"building {args.rounds} images, registry {registry.host} ...", flush=True)
        imgs = bench_images.build_and_push(registry.url, registry.host, args.rounds)
        cni_conf = base / "cni"
        write_cni_conf(cni_conf, base / "ipam")
        runtimes = [Pycri(base, cni_conf)]
        if args.before is not None:
            runtimes.append(Pycri(base, cni_conf, repo_root=args.before.resolve(),
                                  name="pycri-before"))
        if not args.pycri_only:
            runtimes.append(Containerd(base, cni_conf, registry.host, imgs.pause))
        clients = {rt.name: rt.start() for rt in runtimes}
        for rt in runtimes:   # warm-up: connections, code paths, the registry's caches
            clients[rt.name].PullImage(api_pb2.PullImageRequest(
                image=api_pb2.ImageSpec(image=imgs.busybox)))
            times[rt.name] = []
            cpu[rt.name] = []
        for n, image in enumerate(imgs.big):
            order = runtimes[n % len(runtimes):] + runtimes[:n % len(runtimes)]
            if n // len(runtimes) % 2:
                order.reverse()
            line = []
            for rt in order:
                pids = rt.runtime_pids()
                used = cpu_seconds(pids)
                seconds = workloads.cold_pull(clients[rt.name], image)
                cpu[rt.name].append(cpu_seconds(pids) - used)
                times[rt.name].append(seconds)
                line.append(f"{rt.name} {seconds * 1000:.0f} ms (cpu {cpu[rt.name][-1] * 1000:.0f})")
            print(f"  round {n}: " + ", ".join(line), flush=True)
    finally:
        tear_down(runtimes, registry, base)

    med = {name: statistics.median(v) * 1000 for name, v in times.items()}
    for name, v in times.items():
        print(f"{name}: median {med[name]:.0f} ms over {len(v)} pulls "
              f"(min {min(v) * 1000:.0f}, max {max(v) * 1000:.0f}); CPU per pull (with the "
              f"RemoveImage after it) median {statistics.median(cpu[name]) * 1000:.0f} ms")
    if "containerd" in med:
        for name in med:
            if name != "containerd":
                print(f"ratio {name}/containerd: {med[name] / med['containerd']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
