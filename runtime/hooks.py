"""OCI hooks: running one hook with the container's state on stdin (OCI runtime spec, "Hooks").

A hook is {"path": abs, "args": [argv0, ...], "env": ["K=V"], "timeout": seconds | null}. It is
executed directly (no shell) with exactly `env` as its environment, the OCI state JSON
({"ociVersion", "id", "status", "pid", "bundle", "annotations"}) on stdin, stdout discarded and
the first MAX_OUTPUT bytes of stderr kept for the error message. A hook that exits non-zero,
is killed, or outlives its timeout (UNSET_TIMEOUT when it gives none; then it is SIGKILLed)
fails with FailedPrecondition naming it. Where each kind runs (OCI runtime spec):

- createRuntime   runtime namespace, after the container's namespaces exist, before pivot_root
                  (container init, through a helper forked before any namespace is joined)
- createContainer container namespaces, before pivot_root (container init)
- startContainer  container namespaces, after StartContainer, before the user process (init)
- poststart       runtime namespace, after the user process started (daemon; failure logged)
- poststop        runtime namespace, after the container is deleted (daemon; failure logged)

Standard library only: the container init imports it.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from typing import Any

from pycri_common.errors import FailedPrecondition, InvalidArgument

OCI_VERSION = "1.2.0"
HOOK_KINDS: tuple[str, ...] = ("createRuntime", "createContainer", "startContainer",
                               "poststart", "poststop")
MAX_OUTPUT = 4096
MAX_HOOKS = 256
#: A hook that sets no timeout gets this many seconds. The OCI default is to wait for ever, but
#: every kind runs inside a CRI call (the container-side kinds inside the daemon's 30 s shim
#: request): an unbounded hook would hold that call and its worker until kubelet's deadline and
#: then fail with a timeout that names no hook. Bounded, it fails naming itself.
UNSET_TIMEOUT = 20


def validate_hooks(value: Any, field: str = "hooks") -> dict[str, list[dict[str, Any]]]:
    """Checks a ContainerSpec "hooks" object; returns it normalized (all kinds present)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"container spec: {field}: must be an object")
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, hooks in value.items():
        if kind not in HOOK_KINDS:
            raise InvalidArgument(f"container spec: {field}: unknown hook kind {kind!r} "
                                  f"(known: {', '.join(HOOK_KINDS)})")
        if not isinstance(hooks, list) or len(hooks) > MAX_HOOKS:
            raise InvalidArgument(f"container spec: {field}.{kind}: must be a list of at most "
                                  f"{MAX_HOOKS} hooks")
        out[kind] = [_validate_hook(h, f"{field}.{kind}[{i}]") for i, h in enumerate(hooks)]
    return out


def _validate_hook(h: Any, field: str) -> dict[str, Any]:
    def bad(msg: str) -> InvalidArgument:
        return InvalidArgument(f"container spec: {field}: {msg}")

    if not isinstance(h, dict):
        raise bad("must be an object")
    path = h.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise bad(f"path must be an absolute path, got {path!r}")
    args = h.get("args") or [path]
    env = h.get("env") or []
    for name, lst in (("args", args), ("env", env)):
        if not isinstance(lst, list) or not all(isinstance(a, str) and "\0" not in a
                                                for a in lst):
            raise bad(f"{name} must be a list of strings")
    if not all("=" in kv and not kv.startswith("=") for kv in env):
        raise bad("env entries must be NAME=VALUE")
    timeout = h.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                or timeout <= 0):
        raise bad(f"timeout must be a positive number of seconds, got {timeout!r}")
    return {"path": path, "args": list(args), "env": list(env), "timeout": timeout}


def state(container_id: str, status: str, pid: int, bundle: str,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The OCI state of a container as hooks receive it."""
    out: dict[str, Any] = {"ociVersion": OCI_VERSION, "id": container_id, "status": status,
                           "bundle": bundle, "annotations": dict(annotations or {})}
    if pid > 0:
        out["pid"] = pid
    return out


def run_hook(hook: dict[str, Any], oci_state: dict[str, Any], kind: str, index: int) -> None:
    """Runs one hook to its end; FailedPrecondition when it fails or times out."""
    what = f"{kind} hook {index} ({hook['path']})"
    data = json.dumps(oci_state).encode()
    env = dict(kv.split("=", 1) for kv in hook.get("env") or [])
    timeout = hook.get("timeout") or UNSET_TIMEOUT
    try:
        proc = subprocess.Popen(  # a hook of the node's CDI/NRI config
            hook.get("args") or [hook["path"]], executable=hook["path"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=True, start_new_session=True, cwd="/")
    except OSError as e:
        raise FailedPrecondition(f"{what}: cannot run: {e.strerror}") from None
    deadline = time.monotonic() + timeout
    err = _pump(proc, data, deadline)
    if err is None:
        _kill(proc)
        raise FailedPrecondition(f"{what}: did not finish within {timeout}s (killed)")
    code = proc.wait()
    if code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        text = err.decode("utf-8", "replace").strip()
        raise FailedPrecondition(f"{what}: {how}" + (f": {text}" if text else ""))


def _pump(proc: subprocess.Popen[bytes], data: bytes, deadline: float | None) -> bytes | None:
    """Writes the state, reads stderr (kept up to MAX_OUTPUT) until both ends close and the
    process exits; None on timeout."""
    assert proc.stdin is not None and proc.stderr is not None
    err = bytearray()
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stderr, selectors.EVENT_READ)
    view = memoryview(data)
    try:
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            for key, _ in sel.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        n = os.write(proc.stdin.fileno(), view)
                    except BlockingIOError:
                        continue
                    except OSError:  # EPIPE: the hook does not read its state
                        n = len(view)
                    view = view[n:]
                    if not view:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    chunk = os.read(proc.stderr.fileno(), 65536)
                    if not chunk:
                        sel.unregister(proc.stderr)
                        continue
                    if len(err) < MAX_OUTPUT:
                        err += chunk[: MAX_OUTPUT - len(err)]
        while deadline is not None:  # both pipes closed: wait for the exit, within the time
            if proc.poll() is not None:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
    finally:
        sel.close()
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        proc.stderr.close()
    return bytes(err)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the hook and whatever it started
    except OSError:
        proc.kill()
    proc.wait()


def run_hooks(hooks: dict[str, list[dict[str, Any]]] | None, kind: str,
              oci_state: dict[str, Any]) -> None:
    """Runs the hooks of one kind in order; the first failure stops and raises."""
    for i, hook in enumerate((hooks or {}).get(kind) or []):
        run_hook(hook, oci_state, kind, i)


def run_hooks_logged(hooks: dict[str, list[dict[str, Any]]] | None, kind: str,
                     oci_state: dict[str, Any]) -> list[str]:
    """poststart/poststop: every hook runs; failures are returned (for a warning), not raised."""
    failures = []
    for i, hook in enumerate((hooks or {}).get(kind) or []):
        try:
            run_hook(hook, oci_state, kind, i)
        except FailedPrecondition as e:
            failures.append(str(e))
    return failures
