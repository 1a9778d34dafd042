"""ShimWatch: which pods' shims are alive, for every List at the cost of one poll(2).

Each watched shim is held by a pidfd (pidfd_open(2), Linux >= 5.3), opened once after the
/proc check of shim_process.is_shim_of has said the pid is that pod's shim. A pidfd becomes
readable when its process exits, and it names that process and no other, so a recycled pid
cannot pass for the shim later. `poll()` asks the kernel once about all of them; `alive()`
is then a dict lookup. Without pidfds (old kernels) every check is the /proc check itself.
`on_dead(shim_dir)` is called (outside the lock) from the poll() that first sees a watched
shim gone: the SandboxManager starts a successor shim that adopts the pod then. With
`start_death_watch()` a thread waits on the same pidfds (epoll) and runs that poll() as soon
as one becomes readable, so a death is noticed at once, not at the next List.
"""
from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from cri_server.sandboxes import shim_process


class ShimWatch:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[str, tuple[int, int]] = {}   # shim_dir -> (pid, pidfd)
        self._dirs: dict[int, str] = {}              # pidfd -> shim_dir
        self._dead: set[str] = set()                 # shim dirs whose watched shim exited
        self._poller = select.poll()
        self._pidfds = hasattr(os, "pidfd_open")
        self.on_dead: Callable[[str], None] = lambda shim_dir: None
        self._epoll: select.epoll | None = None      # the death watch (start_death_watch)
        # Moves whenever what alive() answers may have changed (a death seen, a shim watched
        # or forgotten): a List that saw it unmoved may skip its per-shim checks.
        self.changes = 0

    def poll(self) -> None:
        """Takes note of every watched shim that has exited since the last call."""
        died: list[str] = []
        with self._lock:
            if not self._dirs:
                return
            for fd, _ in self._poller.poll(0):
                shim_dir = self._dirs.get(fd)
                if shim_dir is not None and shim_dir not in self._dead:
                    self._dead.add(shim_dir)
                    died.append(shim_dir)
                    self.changes += 1
                    self._unwatch_death(fd)   # readable for good: the thread would spin
        for shim_dir in died:
            self.on_dead(shim_dir)

    def alive(self, shim_dir: str, pid: int | None = None) -> bool:
        """Whether the shim of shim_dir (pid, or the one its pid file names) was alive at the
        last poll(); a shim seen for the first time is checked in /proc and then watched."""
        with self._lock:
            watched = self._fds.get(shim_dir)
            if watched is not None and (pid is None or pid == watched[0]):
                return shim_dir not in self._dead
        if pid is None:
            pid = shim_process.pid_from_file(shim_dir)
        if not pid:
            return False
        if not self._pidfds:
            return shim_process.is_shim_of(pid, shim_dir)
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        # checked after the open: the pidfd holds the very process that passed the check
        if not shim_process.is_shim_of(pid, shim_dir):
            os.close(fd)
            return False
        with self._lock:
            self._forget_locked(shim_dir)
            self._fds[shim_dir] = (pid, fd)
            self._dirs[fd] = shim_dir
            self.changes += 1
            self._poller.register(fd, select.POLLIN)
            if self._epoll is not None:
                self._epoll.register(fd, select.EPOLLIN)
        return True

    def watched_alive(self, shim_dir: str) -> bool:
        """Whether shim_dir's shim is held by a pidfd and was alive at the last poll (so its
        death will move `changes`)."""
        with self._lock:
            return shim_dir in self._fds and shim_dir not in self._dead

    def forget(self, shim_dir: str) -> None:
        """Stops watching shim_dir (its pod was stopped or removed); closes the pidfd."""
        with self._lock:
            self._forget_locked(shim_dir)

    def _forget_locked(self, shim_dir: str) -> None:
        watched = self._fds.pop(shim_dir, None)
        self._dead.discard(shim_dir)
        self.changes += 1
        if watched is None:
            return
        fd = watched[1]
        self._dirs.pop(fd, None)
        self._poller.unregister(fd)
        self._unwatch_death(fd)
        os.close(fd)

    def _unwatch_death(self, fd: int) -> None:
        if self._epoll is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass

    def start_death_watch(self) -> None:
        """Start the thread that runs poll() as soon as a watched shim exits (once)."""
        with self._lock:
            if self._epoll is not None or not self._pidfds:
                return
            self._epoll = select.epoll()
            for fd, shim_dir in self._dirs.items():
                if shim_dir not in self._dead:
                    self._epoll.register(fd, select.EPOLLIN)
            epoll = self._epoll
        threading.Thread(target=self._death_loop, args=(epoll,), daemon=True,
                         name="shim-deaths").start()

    def _death_loop(self, epoll: select.epoll) -> None:
        while True:
            try:
                events = epoll.poll(1.0)
            except (OSError, ValueError):   # closed by stop_death_watch()
                return
            if events:
                self.poll()

    def stop_death_watch(self) -> None:
        with self._lock:
            epoll, self._epoll = self._epoll, None
        if epoll is not None:
            epoll.close()

    def close(self) -> None:
        self.stop_death_watch()
        with self._lock:
            for shim_dir in list(self._fds):
                self._forget_locked(shim_dir)
