"""The daemon's handle on the zygote that forks pod shims: started once, restarted if it died."""
from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from pycri_common.errors import FailedPrecondition, Unavailable
from runtime.pod_spec import PodSpec
from runtime.zygote_client import ZygoteClient, ZygoteError, start_zygote

log = logging.getLogger(__name__)


class ZygoteLink:
    def __init__(self, state_dir: str, python: str = "") -> None:
        self.state_dir = state_dir
        self.python = python or sys.executable  # the interpreter of the zygote and shims
        self._client: ZygoteClient | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            self._client = start_zygote(self.state_dir, python=self.python)

    def _ensure(self, failed: ZygoteClient | None = None) -> ZygoteClient:
        """The zygote, (re)started if there is none or it is still `failed` (callers that saw
        the same zygote die restart it once; a second start would stop the new one)."""
        with self._lock:
            if self._client is not None and self._client is not failed:
                return self._client
            old = self._client
            if old is not None and old.process is not None:
                old.process.poll()  # reap a dead zygote we started
            log.warning("(re)starting the zygote")
            try:
                self._client = start_zygote(self.state_dir, python=self.python)
            except ZygoteError as exc:
                raise Unavailable(f"cannot start the zygote that starts pod shims: {exc}") from None
            return self._client

    def _alive(self, client: ZygoteClient) -> bool:
        try:
            client.ping(timeout=2.0)
            return True
        except ZygoteError:
            return False

    def spawn(self, pod_spec: PodSpec) -> dict[str, Any]:
        """{"pid", "pause_pid", "ns"} of the new shim once it is ready."""
        return self._spawn(pod_spec, adopt=False)

    def adopt(self, pod_spec: PodSpec) -> dict[str, Any]:
        """{"pid", "pause_pid", "ns"} of a successor shim that took the running pod back from
        its dead shim (runtime.shim.adopt)."""
        return self._spawn(pod_spec, adopt=True)

    def _spawn(self, pod_spec: PodSpec, adopt: bool) -> dict[str, Any]:
        client = self._ensure()
        try:
            return client.spawn_shim_info(pod_spec, adopt=adopt)
        except ZygoteError as exc:
            if self._alive(client):
                raise FailedPrecondition(f"starting the pod's shim failed: {exc}") from None
            log.warning("the zygote is gone (%s); restarting it", exc)
        client = self._ensure(failed=client)
        try:
            return client.spawn_shim_info(pod_spec, adopt=adopt)
        except ZygoteError as exc:
            raise FailedPrecondition(f"starting the pod's shim failed: {exc}") from None

    def stop(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.stop()
                self._client = None
