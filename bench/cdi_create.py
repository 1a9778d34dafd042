"""CreateContainer with and without CDI devices, on one pycri daemon (as root).

    sudo python3 -m bench.cdi_create [--rounds 30]

Each round creates (timed: the CreateContainer RPC as the client sees it) and removes one
container of each kind, in alternating order: no CDI device; two CDI devices (device nodes
made by mknod, a bind mount, env, extra groups: tests.support.cdi); the same two devices plus
one createContainer hook (/bin/true). Then times the registry's change check alone
(Registry.resolve of two devices with nothing changed) and the application of two devices
edits to a real container's spec. Prints medians and p90s, as JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from typing import Any

from cri_server.cdi import inject
from cri_server.cdi.registry import Registry
from proto import api_pb2
from tests.support.cdi import Vendor
from tests.support.containers import ContainerEnv
from tests.support.daemon import PycriDaemon

DEVICES = ("vendor.test/gpu=a", "vendor.test/gpu=b")


def _spec(vendor: Vendor, hook: bool) -> dict[str, Any]:
    doc = vendor.spec()
    doc["containerEdits"] = {"env": ["CDI_SPEC=1"]}
    if hook:
        doc["containerEdits"]["hooks"] = [{"hookName": "createContainer", "path": "/bin/true"}]
    return doc


def _p90(values: list[float]) -> float:
    return sorted(values)[max(0, int(len(values) * 0.9) - 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args(argv)
    daemon = PycriDaemon(config={"log_level": "info"}).start()
    vendor = Vendor(daemon.base / "cdi")
    vendor.write("plain.yaml", _spec(vendor, hook=False))
    hooked = _spec(vendor, hook=True)
    hooked["kind"] = "vendor.test/hooked"
    vendor.write("hooked.yaml", hooked)
    kinds = {"no CDI device": [],
             "2 CDI devices": list(DEVICES),
             "2 CDI devices + createContainer hook": [d.replace("gpu", "hooked")
                                                      for d in DEVICES]}
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    stored_spec: dict[str, Any] = {}
    try:
        with ContainerEnv(daemon.c) as env:
            order = list(kinds)
            for r in range(args.rounds + 2):  # two warm-up rounds
                for kind in order if r % 2 else reversed(order):
                    cfg = env.config(["true"], CDI_devices=[api_pb2.CDIDevice(name=n)
                                                            for n in kinds[kind]])
                    t0 = time.perf_counter()
                    cid = env.create(cfg)
                    took = (time.perf_counter() - t0) * 1000
                    if not kinds[kind]:
                        stored_spec = env.info(cid)["runtimeSpec"]
                    env.remove(cid)
                    if r >= 2:
                        samples[kind].append(took)
        reg = Registry([str(vendor.spec_dir)])
        resolved = reg.resolve(list(DEVICES))
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            reg.resolve(list(DEVICES))
        check_us = (time.perf_counter() - t0) / n * 1e6
        base = stored_spec
        t0 = time.perf_counter()
        for _ in range(200):
            inject.apply(copy.deepcopy(base), resolved)
        apply_us = (time.perf_counter() - t0) / 200 * 1e6
        t0 = time.perf_counter()
        for _ in range(200):
            copy.deepcopy(base)
        apply_us -= (time.perf_counter() - t0) / 200 * 1e6
    finally:
        vendor.close()
        daemon.stop()
        daemon.cleanup_dirs()
    out = {k: {"median_ms": round(statistics.median(v), 2), "p90_ms": round(_p90(v), 2),
               "n": len(v)} for k, v in samples.items()}
    out["registry change check + lookup of 2 devices"] = {"mean_us": round(check_us, 1)}
    out["applying the edits of 2 devices to a spec"] = {"mean_us": round(apply_us, 1)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
