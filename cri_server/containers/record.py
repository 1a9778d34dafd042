"""The persisted container record (store kind "container").

Fixed metadata from CreateContainer plus the last known runtime state. The
runtime state's source of truth is the pod's shim (or its status files when the
shim is gone); the record keeps a copy so that List/Status work without a shim
round trip and exit states survive the shim.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from runtime.shim.protocol import ContainerState

KIND = "container"

# Record states. "creating" is written before any side effect so that a daemon
# killed mid-create is cleaned up on the next start.
CREATING = "creating"
CREATED = "created"
RUNNING = "running"
EXITED = "exited"
UNKNOWN = "unknown"
# A container only moves forward through these; a state file read before a newer one was
# applied (two threads refreshing at once) must not move it back.
_PROGRESS = {CREATING: 0, UNKNOWN: 0, CREATED: 1, RUNNING: 2, EXITED: 3}


def name_key(pod_id: str, name: str, attempt: int) -> str:
    """The reserved name of a container: one per pod/name/attempt."""
    return f"{pod_id}/{name}/{attempt}"


@dataclass
class ContainerRecord:
    id: str
    pod_id: str
    name: str
    attempt: int
    # image as requested (ImageSpec.image), user_specified_image, resolved id and digest ref
    image: str
    user_specified_image: str = ""
    image_annotations: dict[str, str] = field(default_factory=dict)
    image_id: str = ""
    image_ref: str = ""
    volume_image_ids: list[str] = field(default_factory=list)  # images mounted as volumes
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    # CRI mounts as requested (container_path, host_path, readonly, selinux_relabel,
    # propagation (enum number), recursive_read_only)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    stop_signal: int = 0           # CRI Signal enum value as requested (0 = runtime default)
    kill_signal: int = 15          # the signal StopContainer sends first (host number)
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    fingerprint: str = ""         # hash of the request, for kubelet retries
    shim_dir: str = ""            # the pod's shim (status files stay readable after it died)
    #: ContainerSpec.to_json() as sent to the shim, the seccomp rules summarised (kept as JSON:
    #: it is shown as CRI's verbose "runtimeSpec", and records of older daemons load as is)
    spec: dict[str, Any] = field(default_factory=dict)
    # runtime state
    state: str = CREATING
    pid: int = 0
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    user: dict[str, Any] = field(default_factory=dict)  # {"uid","gid","groups"} from the shim

    def to_json(self) -> dict[str, Any]:
        """A deep copy, safe to change."""
        return dataclasses.asdict(self)

    def to_json_text(self) -> str:
        """The record as the store keeps it: json.dumps(to_json()), without the deep copy
        and with the spec (fixed after create, a few KiB, most of the record's bytes)
        encoded once per spec object. Saving a record on each state change is then a
        shallow dump of its other fields (0.05 ms instead of 0.9)."""
        cached = self.__dict__.get("_spec_text")
        if cached is None or cached[0] is not self.spec:
            cached = (self.spec, json.dumps(self.spec))
            self.__dict__["_spec_text"] = cached
        head = json.dumps({name: getattr(self, name) for name in _FIELDS_BUT_SPEC})
        return head[:-1] + ', "spec": ' + cached[1] + "}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContainerRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def name_key(self) -> str:
        return name_key(self.pod_id, self.name, self.attempt)

    def apply_state(self, st: ContainerState) -> bool:
        """Copies a shim ContainerState into the record; True if anything changed."""
        before = (self.state, self.pid, self.started_at, self.finished_at, self.exit_code,
                  self.reason, self.message)
        state = st.state
        if _PROGRESS.get(state, 0) < _PROGRESS.get(self.state, 0):
            return False   # an older state than the one already applied
        if state in (CREATED, RUNNING, EXITED):
            self.state = state
        self.pid = st.pid or self.pid
        for key in ("created_at", "started_at", "finished_at", "exit_code"):
            value = getattr(st, key)
            if value:
                setattr(self, key, value)
        if self.state == EXITED:
            self.exit_code = st.exit_code
            self.reason = st.reason or self.reason
            self.message = st.message or self.message
        after = (self.state, self.pid, self.started_at, self.finished_at, self.exit_code,
                 self.reason, self.message)
        return before != after


_FIELDS_BUT_SPEC = tuple(f.name for f in dataclasses.fields(ContainerRecord) if f.name != "spec")
