"""How long a successor shim takes to adopt a pod after kill -9 of its shim (no daemon).

    sudo PYTHONPATH=. python3 bench/shim_adopt.py [--containers 1,10] [--rounds 10] [--idle]

For each container count N: a zygote in a temp state dir, one pod with N busybox containers
writing a line every 10 ms to their CRI logs (--idle: that only sleep); then R rounds of:
kill -9 of the pod's shim, the zygote's spawn_shim in adopt mode (runtime.shim.adopt) until
its reply (`adopt_ms`), and the first `state` answer of the successor naming every container
RUNNING (`serving_ms`, from the kill). At the end: every container's log has every line
once (`lines_ok`), and the PSS of the last successor beside a fresh shim's
(`successor_pss_kib`, `fresh_pss_kib`).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
from typing import Any

from bench.shim_memory import rollup
from runtime.pod_spec import PodSpec
from runtime.shim_client import ShimClient
from tests.integration.shim_support import ShimEnv, read_cri_log, wait_gone

WRITER = "i=0; while :; do i=$((i+1)); echo l$i; sleep 0.01; done"
IDLE = "echo l1; exec sleep 1000"


def measure(containers: int, rounds: int, idle: bool = False) -> dict[str, Any]:
    env = ShimEnv()
    try:
        client, info = env.spawn("adopt")
        spec = env.pods["adopt"]["spec"]
        cids, logs = [], []
        for i in range(containers):
            cid = f"c{i}"
            cspec = env.container_spec(cid, "adopt", ["sh", "-c", IDLE if idle else WRITER])
            client.create(cid, cspec)
            client.start(cid)
            cids.append(cid)
            logs.append(cspec.log_path)
        _, fresh = env.spawn("fresh")
        time.sleep(0.5)
        fresh_pss = rollup(fresh["pid"])["Pss"]
        adopt_ms, serving_ms = [], []
        pid = info["pid"]
        for _ in range(rounds):
            time.sleep(0.2)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            wait_gone([pid])
            t1 = time.perf_counter()
            reply = env.zygote.spawn_shim_info(PodSpec.from_json(spec), adopt=True)
            t2 = time.perf_counter()
            states = ShimClient(spec["shim_dir"]).state()
            assert all(states[c].state == "running" for c in cids), states
            t3 = time.perf_counter()
            adopt_ms.append((t2 - t1) * 1000)
            serving_ms.append((t3 - t0) * 1000)
            pid = reply["pid"]
        env.pods["adopt"]["info"] = reply
        time.sleep(0.5)
        successor_pss = rollup(pid)["Pss"]
        for cid in cids:
            ShimClient(spec["shim_dir"]).kill(cid, signal.SIGKILL)
        time.sleep(0.5)
        ok = True
        for path in logs:
            lines, part = [], ""
            for _, stream, tag, text in read_cri_log(path):
                if stream == "stdout":
                    part += text
                    if tag == "F":
                        lines.append(part)
                        part = ""
            numbers = [int(text[1:]) for text in lines if text]
            ok = ok and numbers == list(range(1, len(numbers) + 1))
        return {"containers": containers, "rounds": rounds,
                "adopt_ms_median": round(statistics.median(adopt_ms), 1),
                "adopt_ms_max": round(max(adopt_ms), 1),
                "serving_ms_median": round(statistics.median(serving_ms), 1),
                "lines_ok": ok, "successor_pss_kib": successor_pss, "fresh_pss_kib": fresh_pss}
    finally:
        env.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--containers", default="1,10")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--idle", action="store_true",
                    help="containers that only sleep (no writer forking `sleep` 100 times/s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [measure(int(n), args.rounds, args.idle) for n in args.containers.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['containers']:3d} containers: adopt {r['adopt_ms_median']} ms median "
              f"(max {r['adopt_ms_max']}), kill -9 to serving {r['serving_ms_median']} ms, "
              f"lines ok: {r['lines_ok']}, PSS successor {r['successor_pss_kib']} KiB / "
              f"fresh shim {r['fresh_pss_kib']} KiB")


if __name__ == "__main__":
    main()
