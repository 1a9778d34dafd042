"""systemd's D-Bus API for the systemd cgroup driver (the daemon only: it imports jeepney, which
the zygote, the shim and the container init never load).

The unit names and properties come from runtime.cgroups.systemd_units (pure); this module only
sends them: StartTransientUnit (and waits for the job, as runc does), StopUnit, ResetFailedUnit,
SetUnitProperties and a unit's ActiveState. One connection to the system bus is shared by the
daemon's threads (jeepney's threaded router matches replies and signals to their callers).
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Any

from jeepney import DBusAddress, MatchRule, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.threading import DBusRouter, open_dbus_connection
from jeepney.wrappers import DBusErrorResponse

from pycri_common.errors import FailedPrecondition, PycriError
from pycri_common.timeouts import SCALE
from runtime.cgroups.systemd_units import Property

SYSTEMD_RUN_DIR = "/run/systemd/system"  # sd_booted(3): systemd is PID 1
# the D-Bus specification's override of the system bus address, honoured as libdbus does
SYSTEM_BUS = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/system_bus_socket")
_MANAGER = DBusAddress("/org/freedesktop/systemd1", bus_name="org.freedesktop.systemd1",
                       interface="org.freedesktop.systemd1.Manager")
_PROPS = "org.freedesktop.DBus.Properties"
JOB_TIMEOUT = 30.0 * SCALE  # runc waits 30 s for a unit's job
CALL_TIMEOUT = 10.0 * SCALE

WHAT_TO_DO = ("boot the node with systemd as PID 1, or set cgroup_driver = \"cgroupfs\" in "
              "pycri's config (and cgroupDriver: cgroupfs in kubelet's)")


class SystemdError(PycriError):
    """A D-Bus call to systemd failed (maps to the gRPC code of PycriError: UNKNOWN)."""


def systemd_problem(bus_address: str = SYSTEM_BUS) -> str:
    """'' when systemd runs as PID 1 and its bus answers; otherwise what is wrong."""
    if not os.path.isdir(SYSTEMD_RUN_DIR):
        return f"systemd is not running on this host ({SYSTEMD_RUN_DIR} is missing)"
    try:
        Systemd.connect(bus_address).close()
    except FailedPrecondition as exc:
        return str(exc)
    return ""


class Systemd:
    """A connection to systemd's manager on the system bus."""

    def __init__(self, conn: Any, router: DBusRouter) -> None:
        self._conn = conn
        self._router = router
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._waiters: dict[str, queue.Queue[str]] = {}
        self._lock = threading.Lock()
        self._filter = router.filter(MatchRule(type="signal", interface=_MANAGER.interface,
                                               member="JobRemoved", path=_MANAGER.object_path),
                                     queue=self._jobs)
        self._filter.__enter__()
        self._dispatcher = threading.Thread(target=self._dispatch, name="systemd-jobs",
                                            daemon=True)
        self._closed = False
        self._dispatcher.start()

    @classmethod
    def connect(cls, bus_address: str = SYSTEM_BUS) -> Systemd:
        try:
            conn = open_dbus_connection(bus=bus_address, auth_timeout=CALL_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise FailedPrecondition(f"cannot reach systemd's D-Bus system bus at "
                                     f"{bus_address}: {exc}") from None
        router = DBusRouter(conn)
        try:
            rule = MatchRule(type="signal", sender=_MANAGER.bus_name,
                             interface=_MANAGER.interface, member="JobRemoved")
            router.send_and_get_reply(new_method_call(message_bus, "AddMatch", "s",
                                                      (rule.serialise(),)),
                                      timeout=CALL_TIMEOUT)
            self = cls(conn, router)
            self._call("Subscribe")  # systemd sends JobRemoved only to subscribers
        except (DBusErrorResponse, OSError, TimeoutError) as exc:
            router.close()
            conn.close()
            raise FailedPrecondition(f"systemd does not answer on the D-Bus system bus "
                                     f"({exc})") from None
        return self

    def close(self) -> None:
        self._closed = True
        self._jobs.put(None)
        self._filter.__exit__(None, None, None)
        self._router.close()
        self._conn.close()

    # -- plumbing ----------------------------------------------------------------------
    def _dispatch(self) -> None:
        """JobRemoved(u id, o job, s unit, s result) -> the thread waiting for that job."""
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            _, job, _, result = msg.body
            with self._lock:
                waiter = self._waiters.pop(job, None)
                if waiter is None:  # our reply has not come back yet: keep it for the caller
                    q: queue.Queue[str] = queue.Queue()
                    self._waiters[job] = q
                    q.put(result)
                    continue
            waiter.put(result)

    def _call(self, method: str, signature: str | None = None, body: tuple[Any, ...] = (),
              address: DBusAddress = _MANAGER) -> Any:
        msg = new_method_call(address, method, signature, body)
        try:
            reply = self._router.send_and_get_reply(msg, timeout=CALL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            if not isinstance(exc, TimeoutError):  # the connection broke (a bus restart):
                self._closed = True                 # shared() opens a new one next time
            raise SystemdError(f"systemd {method}: {exc}") from None
        if reply.header.message_type.name == "error":
            raise DBusErrorResponse(reply)
        return reply.body

    def _run_job(self, method: str, signature: str, body: tuple[Any, ...], unit: str) -> str:
        """Calls a method that queues a job and waits for the job's result ('done', 'failed',
        'canceled', 'timeout', 'dependency', 'skipped')."""
        (job,) = self._call(method, signature, body)
        with self._lock:
            waiter = self._waiters.pop(job, None)
            if waiter is None:
                self._waiters[job] = waiter = queue.Queue()
            else:
                return str(waiter.get())
        try:
            return str(waiter.get(timeout=JOB_TIMEOUT))
        except queue.Empty:
            with self._lock:
                self._waiters.pop(job, None)
            raise SystemdError(f"systemd did not finish {method} of {unit} within "
                               f"{JOB_TIMEOUT:.0f} s") from None

    # -- the calls ---------------------------------------------------------------------
    def start_transient_unit(self, name: str, properties: list[Property],
                             exists_ok: bool = False) -> bool:
        """Starts a transient unit and waits until systemd has (e.g. a scope: its processes
        are in its cgroup). A leftover failed unit of that name is reset and the start tried
        once more. exists_ok (slices): a running unit of that name is fine. Returns False when
        the unit existed already."""
        props = [(n, (sig, value)) for n, sig, value in properties]
        for attempt in (1, 2):
            try:
                result = self._run_job("StartTransientUnit", "ssa(sv)a(sa(sv))",
                                       (name, "replace", props, []), name)
            except DBusErrorResponse as exc:
                if exc.name != "org.freedesktop.systemd1.UnitExists":
                    raise SystemdError(f"systemd StartTransientUnit {name}: {exc}") from None
                if exists_ok and self.active_state(name) in ("active", "activating"):
                    return False
                if attempt == 2:
                    raise SystemdError(f"systemd unit {name} exists already") from None
                self.reset_failed(name)
                continue
            if result != "done":
                self.reset_failed(name)
                raise SystemdError(f"systemd could not start {name}: job {result}")
            return True
        raise AssertionError("unreachable")

    def stop_unit(self, name: str) -> None:
        """Stops a unit (systemd kills what is left in its cgroup and removes the cgroup) and
        resets it if it failed, so that nothing of it stays loaded. An unknown unit is fine."""
        try:
            result = self._run_job("StopUnit", "ss", (name, "replace"), name)
        except DBusErrorResponse as exc:
            if exc.name != "org.freedesktop.systemd1.NoSuchUnit":
                raise SystemdError(f"systemd StopUnit {name}: {exc}") from None
            result = "done"
        self.reset_failed(name)
        if result not in ("done", "skipped"):
            raise SystemdError(f"systemd could not stop {name}: job {result}")

    def reset_failed(self, name: str) -> None:
        try:
            self._call("ResetFailedUnit", "s", (name,))
        except DBusErrorResponse:
            pass  # not loaded or not failed

    def set_properties(self, name: str, properties: list[Property]) -> None:
        """SetUnitProperties(runtime=true): systemd applies them to the unit's cgroup now."""
        if not properties:
            return
        props = [(n, (sig, value)) for n, sig, value in properties]
        try:
            self._call("SetUnitProperties", "sba(sv)", (name, True, props))
        except DBusErrorResponse as exc:
            raise SystemdError(f"systemd SetUnitProperties {name}: {exc}") from None

    def active_state(self, name: str) -> str | None:
        """The unit's ActiveState, or None when systemd has no such unit loaded."""
        try:
            (path,) = self._call("GetUnit", "s", (name,))
        except DBusErrorResponse as exc:
            if exc.name == "org.freedesktop.systemd1.NoSuchUnit":
                return None
            raise SystemdError(f"systemd GetUnit {name}: {exc}") from None
        unit = DBusAddress(path, bus_name=_MANAGER.bus_name, interface=_PROPS)
        try:
            ((_, state),) = self._call("Get", "ss", ("org.freedesktop.systemd1.Unit",
                                                     "ActiveState"), unit)
        except DBusErrorResponse:
            return None  # unloaded meanwhile
        return str(state)

    def version(self) -> str:
        props = DBusAddress(_MANAGER.object_path, bus_name=_MANAGER.bus_name, interface=_PROPS)
        ((_, value),) = self._call("Get", "ss", (_MANAGER.interface, "Version"), props)
        return str(value)


_shared: Systemd | None = None
_shared_lock = threading.Lock()


def shared() -> Systemd:
    """The daemon's connection, opened on first use (FailedPrecondition saying what to do when
    systemd is not there)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed:
            if not os.path.isdir(SYSTEMD_RUN_DIR):
                raise FailedPrecondition(
                    f'cgroup_driver is "systemd" but systemd is not running on this host '
                    f"({SYSTEMD_RUN_DIR} is missing): {WHAT_TO_DO}")
            try:
                _shared = Systemd.connect()
            except FailedPrecondition as exc:
                raise FailedPrecondition(f'cgroup_driver is "systemd" but {exc}: '
                                         f"{WHAT_TO_DO}") from None
        return _shared

