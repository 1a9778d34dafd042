"""The zygote: a small single-threaded process that forks pod shims (contract 1 of
docs/architecture.md).

    python3 -m runtime.zygote --socket <state>/zygote.sock

It pre-imports the shim (and runtime.container_init when present), runs the shim's
request path once (runtime.shim.warmup: specialised bytecode is shared), calls
gc.freeze() so forked shims share those pages, then serves JSON lines on its
unix socket:

    {"op": "spawn_shim", "pod": <PodSpec JSON, runtime.pod_spec>} -> {"ok": true, "pid": <shim pid>,
        "pause_pid": int|null, "ns": {type: path}}  once the shim is ready,
        or {"ok": false, "error": "..."}
    {"op": "spawn_shim", "pod": ..., "adopt": true} -> the same, from a successor shim that
        takes back the running pod of a shim that died (runtime.shim.adopt); never stopped
        by the zygote when its requester went away
    {"op": "ping"} -> {"ok": true, "pid": <zygote pid>}
    {"op": "exit"} -> {"ok": true}, then the zygote exits (shims keep running)

Each shim is forked once and calls setsid(): a session of its own, no signal
from the daemon's or the zygote's process group or terminal reaches it, and
kill -9 of the daemon or the zygote does not touch pods (shims are then
re-parented like any orphan). The zygote reaps shims that exit while it lives,
and exits itself within PARENT_CHECK_INTERVAL once the daemon that started it
is gone (a restarted daemon starts a zygote of its own).
One fork instead of the classic double fork saves the intermediate process
(≈ 4 ms of RunPodSandbox: its fork and the teardown of its copied address
space). Several spawns may be in flight at once; replies come as each shim
reports ready.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import select
import selectors
import signal
import socket
import sys
import time
from typing import Any

from pycri_common.errors import InvalidArgument
from runtime import keeper, syscalls
from runtime.pod_spec import PodSpec
from runtime.shim import main as shim_main
from runtime.shim import warmup as shim_warmup

SPAWN_TIMEOUT = 60.0
PARENT_CHECK_INTERVAL = 2.0  # seconds


def _preimport() -> None:
    for name in ("runtime.container_init", "runtime.cgroups"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    keeper.binary()  # built now when missing: a missing compiler fails the zygote's start
    shim_warmup.warm_up()  # the shims share the specialised request path (runtime.shim.warmup)


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""


class Zygote:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, self._accept)
        self.spawns: dict[int, tuple[_Client, bytes, float]] = {}  # ready fd -> client
        self.spawn_pods: dict[int, PodSpec] = {}  # ready fd -> pod spec
        self.adopting: set[int] = set()  # ready fds of adopting spawns
        self.running = True
        self._clients: dict[int, _Client] = {}

    def _reap(self, wakeup: int) -> None:
        """Shims are our children (one fork + setsid; no intermediate to wait for): reap the
        ones that exit while we live. Once we are gone they are re-parented like orphans."""
        try:
            while os.read(wakeup, 512):
                pass
        except BlockingIOError:
            pass
        syscalls.reap_children()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel.register(wake_r, selectors.EVENT_READ, self._reap)
        daemon = os.getppid()
        while self.running:
            if os.getppid() != daemon:
                break  # the daemon is gone: its successor starts a zygote of its own
            timeout = PARENT_CHECK_INTERVAL
            if self.spawns:
                timeout = min(timeout, max(0.0, min(d for _, _, d in self.spawns.values())
                                           - time.monotonic()))
            for key, _ in self.sel.select(timeout):
                key.data(key.fileobj)
            now = time.monotonic()
            for fd, (_client, _, deadline) in list(self.spawns.items()):
                if deadline <= now:
                    self._finish_spawn(fd, {"ok": False, "error":
                                            f"shim did not report ready within {SPAWN_TIMEOUT}s"})

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, self._readable)
        self._clients[sock.fileno()] = _Client(sock)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def _send(self, client: _Client, msg: dict[str, Any]) -> bool:
        try:
            client.sock.setblocking(True)
            client.sock.settimeout(5)
            client.sock.sendall(json.dumps(msg).encode() + b"\n")
            client.sock.setblocking(False)
        except OSError:
            self._drop(client)
            return False
        return True

    def _readable(self, sock: socket.socket) -> None:
        client = self._clients.get(sock.fileno())
        if client is None:
            return
        try:
            data = sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.buf += data
        while b"\n" in client.buf:
            line, client.buf = client.buf.split(b"\n", 1)
            if line.strip():
                self._request(client, line)
        if len(client.buf) > 16 << 20:
            self._drop(client)

    def _request(self, client: _Client, line: bytes) -> None:
        try:
            req = json.loads(line)
            op = req.get("op") if isinstance(req, dict) else None
        except ValueError as e:
            self._send(client, {"ok": False, "error": f"bad request: {e}"})
            return
        if op == "ping":
            self._send(client, {"ok": True, "pid": os.getpid()})
        elif op == "exit":
            self._send(client, {"ok": True})
            self.running = False
        elif op == "spawn_shim":
            try:
                pod = PodSpec.from_json(req.get("pod"))
            except InvalidArgument as e:
                self._send(client, {"ok": False, "error": str(e)})
                return
            self._spawn(client, pod, adopt=req.get("adopt") is True)
        else:
            self._send(client, {"ok": False, "error": f"unknown op {op!r}"})

    def _spawn(self, client: _Client, pod: PodSpec, adopt: bool = False) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                os.setsid()
                os.closerange(3, w)
                os.closerange(w + 1, 1 << 20)
                shim_main.run_shim(pod, w, adopt=adopt)
            finally:
                os._exit(1)
        os.close(w)
        os.set_blocking(r, False)
        self.spawns[r] = (client, b"", time.monotonic() + SPAWN_TIMEOUT)
        self.spawn_pods[r] = pod
        if adopt:
            self.adopting.add(r)
        self.sel.register(r, selectors.EVENT_READ, self._ready_data)

    def _ready_data(self, fd: int) -> None:
        client, buf, deadline = self.spawns[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf += data
        if b"\n" in buf or not data:
            line = buf.split(b"\n", 1)[0]
            try:
                msg = json.loads(line) if line else None
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                msg = {"ok": False, "error": "shim exited during start-up without a report "
                                             "(see shim.log in its shim_dir)"}
            self._finish_spawn(fd, msg)
            return
        self.spawns[fd] = (client, buf, deadline)

    def abandon_pending(self) -> None:
        """On exit: wait (5 s at most) for shims still starting, then stop those that got
        ready, since their requesters will never hear of them. A shim slower than that sees
        EPIPE on its report and undoes itself."""
        deadline = time.monotonic() + 5.0
        for fd in list(self.spawns):
            client, buf, _ = self.spawns[fd]
            while b"\n" not in buf:
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                if not ready:
                    break
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                buf += chunk
            self._drop(client)
            try:
                ok = json.loads(buf.split(b"\n", 1)[0]).get("ok") if b"\n" in buf else False
            except ValueError:
                ok = False
            self.spawns.pop(fd)
            pod = self.spawn_pods.pop(fd)
            os.close(fd)
            if ok and fd not in self.adopting:
                _stop_unwanted_shim(pod)

    def _finish_spawn(self, fd: int, msg: dict[str, Any]) -> None:
        client, _, _ = self.spawns.pop(fd)
        pod = self.spawn_pods.pop(fd)
        adopting = fd in self.adopting
        self.adopting.discard(fd)
        self.sel.unregister(fd)
        os.close(fd)  # a shim still starting up sees EPIPE on its report and undoes itself
        delivered = client.sock.fileno() >= 0 and self._send(client, msg)
        if msg.get("ok") and not delivered and not adopting:
            _stop_unwanted_shim(pod)


def _stop_unwanted_shim(pod: PodSpec) -> None:
    """The requester went away before it learnt about the shim: nobody would ever stop it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(5)
    try:
        sock.connect(pod.socket_path)
        sock.sendall(b'{"op": "shutdown", "grace": 0}\n')
        sock.recv(4096)
    except OSError as e:
        print(f"zygote: could not stop the unwanted shim of pod {pod.pod_id}: {e}",
              file=sys.stderr)
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m runtime.zygote")
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    _preimport()
    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    listener.bind(args.socket)
    os.chmod(args.socket, 0o600)
    listener.listen(128)
    listener.setblocking(False)
    gc.collect()
    gc.freeze()
    zygote = Zygote(listener)
    try:
        zygote.serve()
    finally:
        zygote.abandon_pending()
        listener.close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
