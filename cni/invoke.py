"""Finding and executing CNI plugin binaries (spec section "Protocol").

A plugin is run as a child process (subprocess only: the daemon never forks) with the
CNI_* environment variables and its configuration on stdin. Success = exit 0 (ADD prints a
result, VERSION prints version info); failure = non-zero exit with an error JSON
``{"cniVersion", "code", "msg", "details"}`` on stdout. Each run has a timeout after which the
plugin's whole process group is killed.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cni.errors import CniConfigError, CniPluginError, CniPluginTimeout, plugin_error
from pycri_common import errors
from pycri_common.bounded_json import load_json

log = logging.getLogger(__name__)

DEFAULT_BIN_DIRS = ("/opt/cni/bin", "/usr/lib/cni")
DEFAULT_PLUGIN_TIMEOUT = 60.0
_STDERR_LIMIT = 2000


def find_plugin(plugin_type: str, bin_dirs: Sequence[str]) -> str | None:
    """Absolute path of the executable named plugin_type in the first bin dir that has it."""
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        return None
    for directory in bin_dirs:
        path = os.path.join(directory, plugin_type)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def require_plugin(plugin_type: str, bin_dirs: Sequence[str]) -> str:
    path = find_plugin(plugin_type, bin_dirs)
    if path is None:
        raise CniConfigError(
            f"CNI plugin {plugin_type!r} not found in {', '.join(bin_dirs) or '(no bin dirs)'}; "
            "install it (Debian: apt-get install containernetworking-plugins) or fix the "
            "bin dirs in the pycri config"
        )
    return path


@dataclass(frozen=True)
class Invocation:
    """Everything that identifies one plugin call besides its stdin config."""

    command: str  # ADD, DEL, CHECK, VERSION, STATUS, GC
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: str = ""  # CNI_ARGS
    path: str = ""  # CNI_PATH


def plugin_env(inv: Invocation, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for key in [k for k in env if k.startswith("CNI_")]:
        del env[key]
    env.update(
        CNI_COMMAND=inv.command,
        CNI_CONTAINERID=inv.container_id,
        CNI_NETNS=inv.netns,
        CNI_IFNAME=inv.ifname,
        CNI_ARGS=inv.args,
        CNI_PATH=inv.path,
    )
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def run_plugin(
    plugin_path: str,
    inv: Invocation,
    config: Mapping[str, Any],
    network: str,
    timeout: float = DEFAULT_PLUGIN_TIMEOUT,
) -> dict[str, Any] | None:
    """Run one plugin; the decoded stdout JSON on success (None when stdout is empty).

    Raises CniPluginError (subclass by CNI error code) on failure and CniPluginTimeout when
    the plugin runs longer than timeout seconds.
    """
    plugin = os.path.basename(plugin_path)
    stdin = json.dumps(config).encode()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [plugin_path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=plugin_env(inv),
            cwd="/",
            close_fds=True,
            start_new_session=True,  # own process group: a timeout kills its children too
        )
    except OSError as exc:
        raise CniPluginError(
            plugin, inv.command, network, f"cannot execute {plugin_path}: {exc.strerror}"
        ) from exc
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise CniPluginTimeout(
            plugin, inv.command, network, f"no answer within {timeout:g}s; killed"
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    stderr = err.decode(errors="replace").strip()[-_STDERR_LIMIT:]
    log.debug("CNI %s %s container=%s ifname=%s: exit %d in %.1f ms", inv.command, plugin,
              inv.container_id, inv.ifname, proc.returncode, (time.monotonic() - started) * 1e3)
    if proc.returncode != 0:
        raise _error_from_output(plugin, inv.command, network, proc.returncode, out, stderr)
    if not out.strip():
        return None
    try:
        decoded = load_json(out, "stdout", len(out))
    except errors.InvalidArgument as exc:
        raise CniPluginError(plugin, inv.command, network, f"printed invalid JSON: {exc}",
                             stderr=stderr) from None
    if not isinstance(decoded, dict):
        raise CniPluginError(
            plugin, inv.command, network, "printed a JSON value that is not an object",
            stderr=stderr,
        )
    return decoded


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        # a descendant that left the process group (setsid) still holds our pipes: stop
        # waiting for their EOF rather than hang the RPC forever
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()


def _error_from_output(
    plugin: str, command: str, network: str, returncode: int, out: bytes, stderr: str
) -> CniPluginError:
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = str(-returncode)
        return CniPluginError(plugin, command, network, f"killed by {sig}", stderr=stderr)
    try:
        decoded = load_json(out, "stdout", len(out)) if out.strip() else None
    except errors.InvalidArgument:
        decoded = None
    if isinstance(decoded, dict) and ("msg" in decoded or "code" in decoded):
        code = decoded.get("code")
        return plugin_error(
            plugin,
            command,
            network,
            str(decoded.get("msg") or "(no message)"),
            cni_code=code if isinstance(code, int) else None,
            details=str(decoded.get("details") or ""),
            stderr=stderr,
        )
    text = out.decode(errors="replace").strip()[-_STDERR_LIMIT:]
    msg = f"exited with status {returncode}"
    if text:
        msg += f": {text}"
    return CniPluginError(plugin, command, network, msg, stderr=stderr)


def plugin_versions(plugin_path: str, timeout: float = 10.0) -> list[str]:
    """The CNI versions a plugin supports (CNI_COMMAND=VERSION)."""
    out = run_plugin(
        plugin_path, Invocation("VERSION"), {"cniVersion": "1.0.0"}, "<version>", timeout
    )
    versions = (out or {}).get("supportedVersions")
    if not isinstance(versions, list):
        return ["0.1.0", "0.2.0"]  # spec: a plugin without VERSION output predates 0.3.0
    return [v for v in versions if isinstance(v, str)]
