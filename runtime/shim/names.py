"""The names the node monitor goes by, for the processes that look for it (the zygote, the
daemon) without loading the shim machinery (runtime.shim.monitor)."""
from __future__ import annotations

import os

MONITOR_COMM = "pycri-monitor"   # its /proc/<pid>/comm
SHIM_COMM = "pycri-shim"         # a per-pod shim of a daemon from before the monitor
SOCKET_NAME = "monitor.sock"     # in the state directory
LOG_NAME = "monitor.log"


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


def socket_of_shim_dir(shim_dir: str) -> str:
    """<state>/monitor.sock for <state>/shims/<pod> (cri_server.paths lays them out so)."""
    return socket_path(os.path.dirname(os.path.dirname(os.path.abspath(shim_dir))))
