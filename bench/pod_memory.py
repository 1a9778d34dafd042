"""Memory the runtime adds per running pod (no daemon, no CNI), and a shim-kill survival check.

    sudo python3 bench/pod_memory.py [--pods 10,50,250] [--json]

Run it as a file so that PYTHONPATH picks the checkout measured (main's old model or this
branch): `PYTHONPATH=/work/main python3 bench/pod_memory.py` measures main.

For each count N: a zygote in a temp state dir, N pods (one busybox `sleep` each, real
runtime.container_init and overlay rootfs), then the PSS (/proc/PID/smaps_rollup) of every
process the runtime started for them - the zygote's descendants (shims, pause-holders, the
containers' keepers where there are keepers), the workload (each container's process and its
descendants) excluded - minus the zygote's PSS before the first pod, divided by N.
The total is also broken down by process kind (comm: the monitor or per-pod shims, the
pause-holders, the keepers, the zygote). Then kill -9 of one pod's shim (with the monitor:
of the monitor): does its container (and its pause-holder) keep running?
Everything is shut down and removed afterwards.
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
from tests.integration.shim_support import ShimEnv, process_gone, wait_gone


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _descendants(root: int, kids: dict[int, list[int]], stop: set[int]) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stop:
            continue
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _pss(pid: int) -> int:
    try:
        return rollup(pid)["Pss"]
    except (OSError, KeyError):
        return 0


_KINDS = {"pycri-monitor": "monitor", "pycri-shim": "shims", "pycri-pause": "pause",
          "pycri-keeper": "keepers"}


def _kind(pid: int, zygote: int) -> str:
    if pid == zygote:
        return "zygote"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return "other"
    if argv0.startswith("pycri-keeper") or os.path.basename(argv0).startswith("pycri-keeper"):
        return "keepers"
    return _KINDS.get(argv0, _KINDS.get(comm, "other"))


def measure(pods: int) -> dict[str, Any]:
    env = ShimEnv()
    try:
        time.sleep(0.3)
        base = _pss(env.zygote_pid)
        workload: set[int] = set()
        starts: list[float] = []
        t0 = time.monotonic()
        for i in range(pods):
            pod_id = f"m{i}"
            client, _ = env.spawn(pod_id)
            cid = f"{pod_id}c"
            spec = env.container_spec(cid, pod_id, ["sleep", "600"], log=False)
            t1 = time.perf_counter()
            client.create(cid, spec)
            client.start(cid)
            starts.append((time.perf_counter() - t1) * 1000)
            workload.add(client.state(cid)[cid].pid)
        spent = time.monotonic() - t0
        time.sleep(1.0)
        kids = _children()
        procs = _descendants(env.zygote_pid, kids, workload)
        by_kind: dict[str, int] = {}
        for p in procs:
            k = _kind(p, env.zygote_pid)
            by_kind[k] = by_kind.get(k, 0) + _pss(p)
        total = sum(by_kind.values())
        by_kind["zygote"] = by_kind.get("zygote", 0) - base  # its growth only
        survived = _shim_kill_survival(env)
        return {"pods": pods, "runtime_processes": len(procs),
                "pss_total_kib": total, "zygote_base_kib": base,
                "per_pod_kib": round((total - base) / pods, 1),
                "per_pod_kib_by_kind": {k: round(v / pods, 1) for k, v in sorted(by_kind.items())},
                "pod_start_ms_mean": round(spent * 1000 / pods, 1),
                "create_start_ms_median": round(statistics.median(starts), 1),
                "shim_kill9_container_and_pause_survive": survived}
    finally:
        env.close()


def _shim_kill_survival(env: ShimEnv) -> bool:
    """kill -9 of the last pod's shim: are its container and pause-holder still there?"""
    pod_id = list(env.pods)[-1]
    pod = env.pods[pod_id]
    from runtime.shim_client import ShimClient
    client = ShimClient(pod["spec"]["shim_dir"])
    cpid = client.state()[f"{pod_id}c"].pid
    pause = pod["info"]["pause_pid"]
    os.kill(pod["info"]["pid"], signal.SIGKILL)
    wait_gone([pod["info"]["pid"]])
    time.sleep(0.5)
    survived = not process_gone(cpid) and not process_gone(pause)
    os.kill(cpid, signal.SIGKILL)  # what the daemon's cleanup of a dead shim does
    try:
        from cri_server.sandboxes.shim_process import kill_pod_processes
    except ImportError:  # main's model: the pause-holder died with its shim
        pass
    else:
        kill_pod_processes(pod["spec"]["shim_dir"], pause)
    wait_gone([cpid, pause])
    # with one monitor every pod lost its server: env.close() ends them as the daemon would
    # (tests.integration.shim_support.kill_orphaned_pod)
    return survived


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", default="10,50,250")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [measure(int(n)) for n in args.pods.split(",")]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['pods']:4d} pods: {r['per_pod_kib'] / 1024:.2f} MiB PSS per pod "
              f"({r['runtime_processes']} runtime processes), pod start {r['pod_start_ms_mean']} "
              f"ms, create+start {r['create_start_ms_median']} ms, shim kill -9 survived: "
              f"{r['shim_kill9_container_and_pause_survive']}")
        print("      per pod KiB: " + ", ".join(f"{k} {v}" for k, v in
                                                 r["per_pod_kib_by_kind"].items()))


if __name__ == "__main__":
    main()
