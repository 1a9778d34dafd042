"""conmon (CRI-O's per-container monitor, Debian package `conmon`) beside pycri's keeper.

    sudo python3 -m bench.conmon_compare [--containers 10]

For each of N busybox `sleep` containers: an OCI bundle (`runc spec`, the tests' busybox
rootfs), `conmon ... -r runc` as CRI-O starts it (it forks, runs `runc create`, stays the
container's monitor), then `runc start`. Prints the median PSS of a conmon process (what a
container costs in monitor memory) and the median time from conmon's launch to its
container pid file (create) and to `runc start` returning (create + start). The keeper side
of the comparison (PSS of a pycri-keeper, and pycri's create + start) comes from
bench.pod_memory and bench.run. Everything is killed and removed afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from bench.shim_memory import rollup
from tests.integration.shim_support import make_busybox_rootfs

RUNC = shutil.which("runc") or "/usr/sbin/runc"
CONMON = shutil.which("conmon") or "/usr/bin/conmon"


def _bundle(base: str, rootfs: str, cid: str) -> str:
    bundle = os.path.join(base, cid)
    os.makedirs(bundle)
    subprocess.run([RUNC, "spec", "--bundle", bundle], check=True)
    with open(os.path.join(bundle, "config.json")) as f:
        spec = json.load(f)
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["process"]["args"] = ["sleep", "600"]
    spec["process"]["terminal"] = False
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(spec, f)
    return bundle


def _wait_file(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or not open(path).read().strip():  # noqa: SIM115
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.0005)


def _wait_created(runc_root: str, cid: str, timeout: float = 20.0) -> None:
    """conmon returns once `runc create` ran; its -p file is written only for CRI-O's sync
    pipe, so ask runc (its state file is there once create succeeded)."""
    state = os.path.join(runc_root, cid, "state.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(state):
        if time.monotonic() > deadline:
            raise TimeoutError(state)
        time.sleep(0.0005)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=10)
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="pycri-conmon-", dir="/tmp")
    rootfs = make_busybox_rootfs(os.path.join(base, "rootfs"))
    runc_root = os.path.join(base, "runc")
    socks = os.path.join(base, "sockets")  # conmon makes <dir>/<cid>: not the bundles' dir
    os.makedirs(socks)
    started: list[str] = []
    conmons: list[int] = []
    create_ms: list[float] = []
    total_ms: list[float] = []
    try:
        for i in range(args.containers):
            cid = f"cmp{i}"
            bundle = _bundle(base, rootfs, cid)
            pidfile, cpid = os.path.join(bundle, "conmon.pid"), os.path.join(bundle, "pid")
            # -p is the container's pid file (written by runc through conmon)
            t0 = time.perf_counter()
            subprocess.run([CONMON, "-c", cid, "-u", cid, "-n", cid, "-r", RUNC,
                            "--runtime-arg", f"--root={runc_root}", "-b", bundle,
                            "-p", cpid, "-P", pidfile, "-l", os.path.join(bundle, "ctr.log"),
                            "--exit-dir", bundle, "--socket-dir-path", socks,
                            "--log-level", "error"], check=True,
                           stdout=subprocess.DEVNULL)
            _wait_created(runc_root, cid)
            t1 = time.perf_counter()
            subprocess.run([RUNC, f"--root={runc_root}", "start", cid], check=True)
            t2 = time.perf_counter()
            started.append(cid)
            _wait_file(pidfile)
            conmons.append(int(open(pidfile).read().strip()))  # noqa: SIM115
            create_ms.append((t1 - t0) * 1000)
            total_ms.append((t2 - t0) * 1000)
        time.sleep(0.5)
        pss = [rollup(p)["Pss"] for p in conmons]
        print(json.dumps({
            "containers": args.containers,
            "conmon_pss_kib_median": statistics.median(pss),
            "conmon_rss_kib_median": statistics.median(rollup(p)["Rss"] for p in conmons),
            "conmon_create_ms_median": round(statistics.median(create_ms), 1),
            "conmon_create_start_ms_median": round(statistics.median(total_ms), 1),
        }, indent=1))
    finally:
        for cid in started:
            subprocess.run([RUNC, f"--root={runc_root}", "kill", cid, "KILL"],
                           stderr=subprocess.DEVNULL, check=False)
        time.sleep(0.5)
        for cid in started:
            subprocess.run([RUNC, f"--root={runc_root}", "delete", "-f", cid],
                           stderr=subprocess.DEVNULL, check=False)
        for p in conmons:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not os.environ.get("KEEP"):
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
