"""Pod shim micro-benchmark: spawn latency and memory per pod (no daemon, no CNI).

    sudo python3 -m bench.shim_micro [--pods 20]

Starts a zygote in a temp state dir, spawns N pod shims (new net/ipc/uts, every
other pod with a pod PID namespace), prints spawn_shim latency (median, p90,
max) and PSS: per shim, per pause-holder, and (zygote + all shims + pauses) / N.
Everything is shut down and removed afterwards.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from typing import Any

from runtime.pod_spec import PodSpec
from runtime.shim_client import ShimClient
from runtime.zygote_client import start_zygote


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=20)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="pycri-shimbench-", dir="/tmp")
    zygote = start_zygote(f"{base}/state")
    zygote_pid = zygote.ping()
    infos: list[tuple[dict[str, Any], dict[str, Any]]] = []
    lat: list[float] = []
    try:
        for i in range(args.pods):
            pod: dict[str, Any] = {"pod_id": f"p{i}", "hostname": f"p{i}",
                   "namespaces": {"network": "pod", "ipc": "pod",
                                  "pid": "pod" if i % 2 else "container"},
                   "shim_dir": f"{base}/state/shims/p{i}", "ns_dir": f"{base}/state/ns/p{i}"}
            t0 = time.perf_counter()
            infos.append((pod, zygote.spawn_shim_info(PodSpec.from_json(pod))))
            lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.5)
        lat.sort()
        shims = [pss_kb(info["pid"]) for _, info in infos]
        pauses = [pss_kb(info["pause_pid"]) for _, info in infos]
        total = pss_kb(zygote_pid) + sum(shims) + sum(pauses)
        print(f"spawn_shim ms: median {statistics.median(lat):.1f}  "
              f"p90 {lat[int(len(lat) * 0.9) - 1]:.1f}  max {lat[-1]:.1f}")
        print(f"PSS kB: shim median {statistics.median(shims)}  pause median "
              f"{statistics.median(pauses)}  zygote {pss_kb(zygote_pid)}")
        print(f"PSS per pod incl. zygote share: {total / args.pods / 1024:.2f} MiB "
              f"({args.pods} pods)")
    finally:
        for pod, _ in infos:
            ShimClient(pod["shim_dir"]).shutdown(grace=0)
        zygote.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
