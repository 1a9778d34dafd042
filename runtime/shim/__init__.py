"""The per-pod shim objects and the node monitor that hosts them (contracts 2 and 3 of
docs/architecture.md).

One single-threaded process for every pod, runtime.shim.monitor, forked once from
runtime.zygote (fork + setsid, so it survives kill -9 of the daemon and of the zygote),
sets each pod up (runtime.shim.podsetup) and serves its shim.sock with the pod's own
objects (runtime.shim.server.Shim), or takes a running pod back after its monitor died
(runtime.shim.adopt). It is a child subreaper; per pod it owns the pause-holder
(runtime.shim.pause, which execs the tiny program of runtime.shim.tinypause) that holds
the pod's namespaces, pins them under ns_dir (runtime.shim.namespaces), forks container
inits and exec processes (runtime.shim.spawn -> runtime.container_init), relays their
stdio to CRI log files (runtime.shim.crilog) and attached clients (runtime.shim.frames),
and records exit states in status files (runtime.shim.statusfile). The control server
(runtime.shim.server) hands each operation to the module of its concern: containers
(create, start, kill, attach), exits (wait, delete), execs, shutdown; runtime.shim.reaper
tells whose exit a reaped child was. Modules here import only the standard library and
runtime.*: never grpc, protobuf, httpx.

Control protocol on <shim_dir>/shim.sock (JSON lines; daemon side: runtime.shim_client)
----------------------------------------------------------------------------------------
request {"op": ..., ...}; reply {"ok": true, ...} or {"ok": false, "kind": <class name in
pycri_common.errors>, "error": msg}. One outstanding request per connection. Each request
and structured reply below is a dataclass of runtime.shim.protocol (Create, CreateReply,
ContainerState, ...), which both sides import: the shim parses a line into it before an
operation runs (a malformed one is InvalidArgument), the daemon builds requests and parses
replies with it. The shim raises the pycri_common.errors classes themselves; the kind on
the wire is the class name, as in every earlier version (a shim outlives a daemon upgrade).

- hello -> {"pod_id", "shim_pid", "pause_pid" (null: no new namespaces), "pause_alive",
  "ns": {"net"|"ipc"|"uts"|"pid": pinned path} (only the pod's own namespaces),
  "containers": [ids]}
- create {"container_id", "spec"} -> {"pid", "user"} once the init waits at its gate.
  Errors reported by the init keep their kind; AlreadyExists for a known id.
- start {"container_id"} -> {"started_at": ns} after the exec succeeded; an exec failure is
  an error reply (the container then shows exited with the init's exit code).
- kill {"container_id", "signal"}: no-op for an exited container.
- state {"container_id"?} -> {"containers": {cid: ContainerState}}
- wait {"container_id", "timeout"} -> ContainerState (after exit, or the current state when
  the timeout passes first).
- delete {"container_id"} -> {"deleted": bool}: SIGKILLs a running container and replies
  after it is reaped; removes the status file. An unknown id is not an error.
- reopen_log {"container_id"}: FailedPrecondition unless running.
- exec {"container_id", "process": {"args", "env"?, "cwd"?, "tty"?, "user"?}} + fds by
  SCM_RIGHTS on the same message ([stdin, stdout, stderr] or [pty slave]) ->
  {"exec_id", "pid"} after the exec succeeded (an exec failure is an error reply). With
  "wait": true (and "timeout", as exec_wait's) the reply is instead exec_wait's, once the
  process exited: ExecSync's whole exchange on one connection.
  The shim closes its copies of the fds; with a tty the caller keeps the pty master (and
  does TIOCSWINSZ itself).
- exec_wait {"exec_id", "timeout"} -> {"exit_code", "timed_out"}; timeout > 0 SIGKILLs the
  process when it expires (exit_code 137, timed_out true). A finished exec is forgotten
  once waited for.
- exec_kill {"exec_id", "signal"}
- attach {"container_id"} -> ok line, then frames both ways (runtime.shim.frames). Output
  goes to the log and to every attached client; a client that falls 2 MiB behind loses
  output frames (never the exit frame) instead of slowing the container. stdin frames go to
  the container's stdin (the client is not read while 1 MiB of stdin is pending). With
  stdin_once the container's stdin closes when the first client that used stdin sends
  STDIN_CLOSE or disconnects.
- shutdown {"grace"}: SIGTERM to running containers, SIGKILL after grace, SIGKILL to
  created ones and execs, stop the pause-holder, unpin namespaces, remove shim.sock and
  shim.pid (status files stay), reply, exit. SIGTERM to the shim does the same (grace 10 s).

Exit codes: exit status, or 128 + signal. Reason: "Completed" (0), "Error", "OOMKilled"
(SIGKILL and the cgroup's oom-kill count rose since start, or on cgroup v1 the OOM watcher
saw an OOM: runtime.shim.oom).
"""
