"""How an exec'd process should join its container's cgroup (cgroup v2): writing its pid to
cgroup.procs after fork (what container_init.exec_into does) or being cloned straight into it
(clone3 with CLONE_INTO_CGROUP, runtime.syscalls.fork_into_cgroup).

    sudo python3 -m bench.exec_cgroup_join [--execs 50] [--root /sys/fs/cgroup]

Makes a parent cgroup `pycri-bench-join-<pid>` under --root (with the root's controllers
enabled for it when --root is the hierarchy's root) and a leaf inside it; then, interleaved,
N rounds in a random order each: fork + exec /bin/true (no join, the baseline), fork + the child writes its
pid to the leaf's cgroup.procs + exec, clone3 into the leaf + exec; each timed from fork to
reaping the child. Prints median and p90 per method (ms) and removes both cgroups. Run it on
a cgroup v2 host (the VM leg: `bash scripts/vm.sh python3 -m bench.exec_cgroup_join`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable

from runtime import syscalls

TRUE = "/bin/true"


def _exec_true() -> None:
    try:
        os.execv(TRUE, [TRUE])
    finally:
        os._exit(127)


def _plain(_leaf: str, _fd: int) -> int:
    pid = os.fork()
    if pid == 0:
        _exec_true()
    return pid


def _write_procs(leaf: str, _fd: int) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except BaseException:  # noqa: BLE001 - the parent sees exit 126
            os._exit(126)
        _exec_true()
    return pid


def _clone3(_leaf: str, fd: int) -> int:
    pid = syscalls.fork_into_cgroup(fd)
    if pid == 0:
        _exec_true()
    return pid


METHODS: dict[str, Callable[[str, int], int]] = {
    "fork (no join)": _plain, "fork + cgroup.procs": _write_procs,
    "clone3 CLONE_INTO_CGROUP": _clone3}


def _time_one(method: Callable[[str, int], int], leaf: str, fd: int) -> float:
    t0 = time.perf_counter()
    pid = method(leaf, fd)
    _, status = os.waitpid(pid, 0)
    dt = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: status {status}")
    return dt


def _in_leaf(leaf: str) -> bool:
    """Sanity check: a child of each joining method really starts in the leaf."""
    for method in (_write_procs, _clone3):
        r, w = os.pipe()
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY)
        pid = syscalls.fork_into_cgroup(fd) if method is _clone3 else os.fork()
        if pid == 0:
            os.close(r)
            if method is _write_procs:
                with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            with open("/proc/self/cgroup") as f:
                os.write(w, f.read().encode())
            os._exit(0)
        os.close(w)
        os.close(fd)
        seen = os.read(r, 4096).decode()
        os.close(r)
        os.waitpid(pid, 0)
        if not any(line.startswith("0::") and line.rstrip().endswith("/leaf")
                   for line in seen.splitlines()):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--execs", type=int, default=50)
    ap.add_argument("--root", default="/sys/fs/cgroup")
    args = ap.parse_args()
    parent = os.path.join(args.root, f"pycri-bench-join-{os.getpid()}")
    leaf = os.path.join(parent, "leaf")
    os.mkdir(parent)
    fd = -1
    try:
        with open(os.path.join(args.root, "cgroup.controllers")) as f:
            available = f.read().split()
        wanted = [c for c in ("cpu", "memory", "pids", "io") if c in available]
        if wanted:
            with open(os.path.join(args.root, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in wanted))
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write(" ".join("+" + c for c in wanted))
        os.mkdir(leaf)
        fd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not _in_leaf(leaf):
            raise SystemExit("a child did not start in the leaf cgroup")
        times: dict[str, list[float]] = {name: [] for name in METHODS}
        for method in METHODS.values():  # warm-up
            _time_one(method, leaf, fd)
        order = list(METHODS.items())
        for _ in range(args.execs):
            random.shuffle(order)  # no method always runs right after another
            for name, method in order:
                times[name].append(_time_one(method, leaf, fd))
        result = {}
        for name, ts in times.items():
            ts.sort()
            result[name] = {"median_ms": round(statistics.median(ts) * 1000, 2),
                            "p90_ms": round(ts[int(len(ts) * 0.9) - 1] * 1000, 2)}
        print(json.dumps({"kernel": os.uname().release, "execs": args.execs,
                          "controllers": wanted, "results": result}, indent=1))
    finally:
        if fd >= 0:
            os.close(fd)
        for d in (leaf, parent):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


if __name__ == "__main__":
    main()
