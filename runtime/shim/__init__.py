"""The per-pod shim (contracts 2 and 3).

One single-threaded process per pod, forked from runtime.zygote (double fork +
setsid, so it survives the daemon and the zygote). It is a child subreaper,
owns the pause-holder (runtime.shim.pause) that holds the pod's namespaces,
pins them under ns_dir, forks container inits and exec processes
(runtime.shim.spawn -> runtime.container_init), relays their stdio to CRI log
files (runtime.shim.crilog) and attached clients (runtime.shim.frames), and
records exit states in status files (runtime.shim.statusfile).

Control protocol: see runtime.shim.server and CONTRACTS.md section 3; the
daemon's side is runtime.shim_client. Modules here import only the standard
library (and runtime.syscalls), never grpc/protobuf/httpx.
"""
