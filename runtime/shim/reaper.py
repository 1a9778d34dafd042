"""Reaping the shim's children (it is a child subreaper) and telling whose exit it was."""
from __future__ import annotations

from runtime import syscalls
from runtime.shim.containers import Containers
from runtime.shim.execs import Execs
from runtime.shim.exits import Exits
from runtime.shim.podstate import PodState


class Reaper:
    def __init__(self, pod: PodState, containers: Containers, exits: Exits, execs: Execs) -> None:
        self.pod = pod
        self.containers = containers
        self.exits = exits
        self.execs = execs

    def reap(self) -> None:
        """Every child that has exited (never blocks)."""
        for pid, status in syscalls.reaped_children():
            self.child_exited(pid, status)

    def child_exited(self, pid: int, status: int) -> None:
        entry = self.pod.pids.get(pid)
        if entry is not None and entry[0] == "container" and entry[1].report_fd >= 0:
            self.containers.read_report(entry[1])  # a pid report may still be queued
        elif entry is not None and entry[0] == "exec" and entry[1].report_fd >= 0:
            self.execs.read_report(entry[1])
        entry = self.pod.pids.pop(pid, None)
        if entry is None:
            self.pod.unclaimed_exit(pid, status)  # its pid report may come later
            return
        kind, obj = entry
        if kind == "keeper":
            obj.keeper_alive = False
            if obj.exit_fd >= 0:  # its exit pipe is at EOF now: take the record first
                self.containers.keeper_recorded(obj)
            self.pod.on_settled()
        elif kind == "pause":
            self.pod.pause_alive = False
        elif kind == "container":
            self.exits.container_exited(obj, status)
        elif kind == "exec":
            self.execs.exited(obj, status)
