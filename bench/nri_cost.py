"""What one connected NRI plugin costs RunPodSandbox and CreateContainer.

    python3 -m bench.nri_cost [--rounds 20]     (as root)

One pycri daemon, a local registry with busybox; each round times RunPodSandbox and
CreateContainer once with no plugin and once with a plugin subscribed to every event that
answers at once (tests/support/nri_plugin.py, in this process), alternating which goes first.
Prints the medians and the difference.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv
from tests.support.daemon import PycriDaemon
from tests.support.nri_plugin import NriTestPlugin

BRIDGE = "pycrinri0"


def _one(env: ContainerEnv, n: int) -> tuple[float, float]:
    cfg = pods.pod_config(name=f"nri-bench-{n}")
    t0 = time.perf_counter()
    pod_id = pods.run_pod(env.cri, cfg)
    t1 = time.perf_counter()
    env.cri.CreateContainer(api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod_id, config=env.config(["sleep", "1000"]), sandbox_config=cfg))
    t2 = time.perf_counter()
    pods.stop_and_remove(env.cri, pod_id)
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    # a bridge and subnet of its own, apart from the test suite's
    daemon = PycriDaemon(config={"log_level": "info", "cni": {
        "default_bridge": BRIDGE, "default_subnet": "10.236.0.0/16"}}).start()
    results: dict[str, list[tuple[float, float]]] = {"none": [], "plugin": []}
    try:
        with ContainerEnv(daemon.c) as env:
            _one(env, -1)  # warm-up
            plugin = NriTestPlugin(daemon.nri_socket, name="bench").connect()
            try:
                for n in range(args.rounds):
                    order = ("none", "plugin") if n % 2 == 0 else ("plugin", "none")
                    for mode in order:
                        if mode == "none":
                            plugin.close()
                            time.sleep(0.05)
                        elif plugin.endpoint is None or plugin.endpoint.closed:
                            plugin = NriTestPlugin(daemon.nri_socket, name="bench").connect()
                        results[mode].append(_one(env, n * 2 + (mode == "plugin")))
            finally:
                plugin.close()
    finally:
        daemon.stop()
        daemon.cleanup_dirs()
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
    for i, what in enumerate(("RunPodSandbox", "CreateContainer")):
        none = statistics.median(r[i] for r in results["none"])
        with_plugin = statistics.median(r[i] for r in results["plugin"])
        print(f"{what:16} median {none:7.1f} ms without, {with_plugin:7.1f} ms with one "
              f"plugin: +{with_plugin - none:.1f} ms ({args.rounds} rounds)")


if __name__ == "__main__":
    main()
