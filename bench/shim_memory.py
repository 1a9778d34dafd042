"""Pod shim memory once it serves containers (no daemon, no CNI).

    sudo python3 -m bench.shim_memory [--pods 6] [--containers 2] [--execs 4] [--status 10]

Starts a zygote in a temp state dir, spawns N pod shims, creates and starts K busybox
`sleep` containers in each (real runtime.container_init, overlay rootfs), then sends each
shim `status` rounds of state (all and per container), wait (timeout 0) and hello, and E
execs (`true`, exec + exec_wait) per container. Prints the median PSS and USS
(Private_Clean + Private_Dirty) of the shims, from /proc/PID/smaps_rollup: what the
shim's own request path costs in copied-on-write pages after the fork from the zygote.

The requests go as raw JSON lines (not through ShimClient), the same bytes whatever the client
version, so two checkouts can be compared (run each with PYTHONPATH at its root).
Everything is shut down and removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from typing import Any

from runtime.shim_client import send_with_fds
from tests.integration.shim_support import ShimEnv


def rollup(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/smaps_rollup."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def call(shim_dir: str, req: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
    """One request line and its ok reply, as JSON (a line any shim version reads)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(150)
    try:
        sock.connect(os.path.join(shim_dir, "shim.sock"))
        send_with_fds(sock, json.dumps(req).encode() + b"\n", fds)
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"the shim closed the connection during {req['op']!r}")
            buf += chunk
    finally:
        sock.close()
    reply: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    if not reply.get("ok"):
        raise RuntimeError(f"{req['op']!r} failed: {reply}")
    return reply


def _spec_json(env: ShimEnv, cid: str, pod_id: str) -> dict[str, Any]:
    spec: Any = env.container_spec(cid, pod_id, ["sleep", "600"])
    # a ContainerSpec (or, in older checkouts, its JSON already)
    return spec if isinstance(spec, dict) else spec.to_json()


def exercise(env: ShimEnv, pod_id: str, containers: int, execs: int, status: int) -> None:
    client, _ = env.spawn(pod_id, pid="pod" if int(pod_id[1:]) % 2 else "container")
    d = client.shim_dir
    cids = [f"{pod_id}c{j}" for j in range(containers)]
    for cid in cids:
        call(d, {"op": "create", "container_id": cid, "spec": _spec_json(env, cid, pod_id)})
        call(d, {"op": "start", "container_id": cid})
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        for cid in cids:
            for _ in range(execs):
                res = call(d, {"op": "exec", "container_id": cid, "process": {"args": ["true"]}},
                           [null, null, null])
                call(d, {"op": "exec_wait", "exec_id": res["exec_id"], "timeout": 10.0})
    finally:
        os.close(null)
    for _ in range(status):
        call(d, {"op": "hello"})
        call(d, {"op": "state"})
        for cid in cids:
            call(d, {"op": "state", "container_id": cid})
            call(d, {"op": "wait", "container_id": cid, "timeout": 0.0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=6)
    ap.add_argument("--containers", type=int, default=2, help="containers per pod")
    ap.add_argument("--execs", type=int, default=4, help="execs per container")
    ap.add_argument("--status", type=int, default=10, help="rounds of state/wait/hello")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = ap.parse_args()
    env = ShimEnv()
    try:
        for i in range(args.pods):
            exercise(env, f"p{i}", args.containers, args.execs, args.status)
        time.sleep(0.3)
        shims = [rollup(pod["info"]["pid"]) for pod in env.pods.values()]
        pss = statistics.median(s["Pss"] for s in shims)
        uss = statistics.median(s["Private_Clean"] + s["Private_Dirty"] for s in shims)
        zygote = rollup(env.zygote_pid)["Pss"]
    finally:
        env.close()
    if args.json:
        print(json.dumps({"pods": args.pods, "containers": args.containers, "execs": args.execs,
                          "status": args.status, "shim_pss_kb": pss, "shim_uss_kb": uss,
                          "zygote_pss_kb": zygote}))
    else:
        print(f"shim median kB: PSS {pss:.0f}  USS {uss:.0f}  (zygote PSS {zygote}; "
              f"{args.pods} pods x {args.containers} containers, {args.execs} execs each, "
              f"{args.status} status rounds)")


if __name__ == "__main__":
    main()
