"""The zygote: a small single-threaded process that starts the node monitor and hands it
pods (contract 1 of docs/architecture.md).

    python3 -m runtime.zygote --socket <state>/zygote.sock

It pre-imports the shim (and runtime.container_init when present), runs the shim's
request path once (runtime.shim.warmup: specialised bytecode is shared), calls
gc.freeze(), then serves JSON lines on its unix socket:

    {"op": "spawn_shim", "pod": <PodSpec JSON, runtime.pod_spec>} -> {"ok": true, "pid": <pid
        of the monitor serving the pod>, "pause_pid": int|null, "ns": {type: path}} once the
        pod is served, or {"ok": false, "error": "..."}
    {"op": "spawn_shim", "pod": ..., "adopt": true} -> the same, once the monitor has taken
        back the running pod of a monitor that died (runtime.shim.adopt); never stopped by
        the zygote when its requester went away
    {"op": "ping"} -> {"ok": true, "pid": <zygote pid>, "monitor_pid": int|null}
    {"op": "exit"} -> {"ok": true}, then the zygote exits (the monitor and pods keep running)

Every pod is served by one node monitor (runtime.shim.monitor) on <state>/monitor.sock. The
zygote links to a live one (a connection kept open: the monitor's "zygote" op) or, when none
answers, forks one from its frozen heap (fork + setsid: a session of its own, so no signal of
the daemon's or the zygote's process group reaches it, and kill -9 of either leaves it
running, re-parented like any orphan). Each spawn_shim is forwarded to the monitor as
spawn_pod on a connection of its own; several may be in flight; replies are passed on as
they come. The zygote reaps a monitor that exits while it lives, and exits itself within
PARENT_CHECK_INTERVAL once the daemon that started it is gone (a restarted daemon starts a
zygote of its own, which links to the same monitor).
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
from pycri_common.timeouts import scaled
from runtime import exec_helper, keeper, syscalls
from runtime.lines import recv_line
from runtime.pod_spec import PodSpec
from runtime.shim import monitor as monitor_mod
from runtime.shim import names as monitor_names
from runtime.shim import warmup as shim_warmup

SPAWN_TIMEOUT = 60.0
PARENT_CHECK_INTERVAL = 2.0  # seconds
MONITOR_LINK_TIMEOUT = 10.0  # a live monitor answers its "zygote" op within this


def _preimport() -> None:
    for name in ("runtime.container_init", "runtime.cgroups"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    keeper.binary()  # built now when missing: a missing compiler fails the zygote's start
    exec_helper.available()  # built now too (without it execs take the Python path)
    shim_warmup.warm_up()  # the shims share the specialised request path (runtime.shim.warmup)


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""


class Zygote:
    def __init__(self, listener: socket.socket, state_dir: str) -> None:
        self.listener = listener
        self.state_dir = state_dir
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, self._accept)
        self.spawns: dict[int, tuple[_Client, bytes, float]] = {}  # monitor conn fd -> client
        self.spawn_pods: dict[int, PodSpec] = {}  # monitor conn fd -> pod spec
        self.spawn_socks: dict[int, socket.socket] = {}
        self.adopting: set[int] = set()  # monitor conn fds of adopting spawns
        self.running = True
        self._clients: dict[int, _Client] = {}
        self.link: socket.socket | None = None   # to the monitor (runtime.shim.monitor)
        self.monitor_pid: int | None = None

    # --- the monitor ----------------------------------------------------------------
    def _connect_monitor(self, req: dict[str, Any], timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(monitor_names.socket_path(self.state_dir))
            sock.sendall(json.dumps(req).encode() + b"\n")
        except OSError:
            sock.close()
            raise
        return sock

    def _try_link(self) -> str:
        """"linked"; "absent": nobody listens on monitor.sock; "closing": a monitor hung up
        (on its way out, with no pods and no zygote); "silent": one is there but did not
        answer in time (busy: never replaced by a second monitor)."""
        try:
            sock = self._connect_monitor({"op": "zygote"}, scaled(MONITOR_LINK_TIMEOUT))
        except (FileNotFoundError, ConnectionRefusedError):
            return "absent"
        except TimeoutError:
            return "silent"
        except OSError:
            return "closing"
        try:
            got = recv_line(sock)
            reply = json.loads(got[0]) if got else {}
        except TimeoutError:
            sock.close()
            return "silent"
        except (OSError, ValueError):
            reply = {}
        if not isinstance(reply, dict) or not reply.get("ok"):
            sock.close()
            return "closing"
        self.link = sock
        self.monitor_pid = int(reply.get("pid") or 0) or None
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, self._link_readable)
        return "linked"

    def _link_readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the monitor is gone: the next spawn starts a new one
            self._drop_link()

    def _drop_link(self) -> None:
        if self.link is not None:
            self.sel.unregister(self.link)
            self.link.close()
            self.link = None
            self.monitor_pid = None

    def _start_monitor(self) -> None:
        """Fork the monitor on a listener bound here (so the socket answers at once)."""
        path = monitor_names.socket_path(self.state_dir)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(128)
            pid = os.fork()
            if pid == 0:
                try:
                    signal.set_wakeup_fd(-1)
                    os.setsid()
                    fd = listener.fileno()
                    os.closerange(3, fd)
                    os.closerange(fd + 1, 1 << 20)
                    monitor_mod.run_monitor(listener, self.state_dir)
                finally:
                    os._exit(1)
        finally:
            listener.close()

    def ensure_monitor(self) -> None:
        """Linked to a live monitor, started when none answers (OSError when that fails)."""
        if self.link is not None:
            return
        path = monitor_names.socket_path(self.state_dir)
        for _ in range(3):
            got = self._try_link()
            if got == "linked":
                return
            if got == "silent":
                raise OSError(f"the monitor on {path} does not answer within "
                              f"{scaled(MONITOR_LINK_TIMEOUT):.0f} s (see monitor.log there); "
                              "a second one is not started beside it")
            if got == "absent":
                break
            time.sleep(0.1)  # closing: it is going, and its socket with it
        self._start_monitor()
        if self._try_link() != "linked":
            raise OSError(f"the monitor started on {monitor_names.socket_path(self.state_dir)} "
                          "does not answer (see monitor.log there)")

    def _reap(self, wakeup: int) -> None:
        """The monitor is our child (one fork + setsid): reaped if it exits while we live.
        Once we are gone it is re-parented like any orphan."""
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
        try:
            self.ensure_monitor()  # now, not in the first RunPodSandbox
        except OSError as e:
            print(f"zygote: no monitor yet (retried per spawn): {e}", file=sys.stderr)
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
            self._send(client, {"ok": True, "pid": os.getpid(), "monitor_pid": self.monitor_pid})
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
        req: dict[str, Any] = {"op": "spawn_pod", "pod": pod.to_json()}
        if adopt:
            req["adopt"] = True
        sock = None
        for _attempt in range(2):  # a monitor that just died: once more with a new one
            try:
                self.ensure_monitor()
                sock = self._connect_monitor(req, 5.0)
                break
            except OSError as e:
                self._drop_link()
                error = f"cannot reach the monitor: {e}"
        if sock is None:
            self._send(client, {"ok": False, "error": error})
            return
        sock.setblocking(False)
        fd = sock.fileno()
        self.spawn_socks[fd] = sock
        self.spawns[fd] = (client, b"", time.monotonic() + SPAWN_TIMEOUT)
        self.spawn_pods[fd] = pod
        if adopt:
            self.adopting.add(fd)
        self.sel.register(fd, selectors.EVENT_READ, self._ready_data)

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
                msg = {"ok": False, "error": "the monitor closed the connection without a "
                                             "reply (see monitor.log and the pod's shim.log)"}
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
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                ready = poller.poll(max(0.0, deadline - time.monotonic()) * 1000)
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
            self.spawn_socks.pop(fd).close()
            adopting = fd in self.adopting
            self.adopting.discard(fd)
            if ok and not adopting:
                _stop_unwanted_shim(pod)

    def _finish_spawn(self, fd: int, msg: dict[str, Any]) -> None:
        client, _, _ = self.spawns.pop(fd)
        pod = self.spawn_pods.pop(fd)
        adopting = fd in self.adopting
        self.adopting.discard(fd)
        self.sel.unregister(fd)
        self.spawn_socks.pop(fd).close()  # a reply after this: the monitor undoes the pod
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
    zygote = Zygote(listener, os.path.dirname(os.path.abspath(args.socket)))
    try:
        zygote.serve()
    finally:
        zygote.abandon_pending()
        zygote._drop_link()
        listener.close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
