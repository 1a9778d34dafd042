"""Pod sandboxes: records, RunPodSandbox/Stop/Remove, status views, recovery.

`SandboxManager` (manager.py) is what the daemon wires in as `svc.sandboxes`:
  get(pod_id) -> SandboxRecord (id or unique prefix), shim(pod_id) -> ShimClient,
  run(request) -> id, stop(id), remove(id), list(), iter_records(filter), recover().
"""
from cri_server.sandboxes.manager import CRASH_POINTS, SandboxManager
from cri_server.sandboxes.record import CREATING, NOTREADY, READY, SandboxRecord

__all__ = ["CRASH_POINTS", "CREATING", "NOTREADY", "READY", "SandboxManager", "SandboxRecord"]
