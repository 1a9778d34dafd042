"""Pod shims from the zygote: namespaces, pinning, sysctls, survival, clean shutdown (root)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pycri_common import errors
from runtime.pod_spec import PodSpec
from runtime.shim_client import ShimClient, read_final_states, shim_pid
from runtime.zygote_client import ZygoteError, start_zygote
from tests.integration.shim_support import ShimEnv, process_gone, wait_gone


@pytest.fixture(scope="module")
def env(shim_env: ShimEnv) -> ShimEnv:
    return shim_env


def ns_link(pid: int | str, name: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{name}")


def mounted_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [ln.split()[4] for ln in f if ln.split()[4].startswith(path)]


def in_pod(pause_pid: int, *cmd: str) -> str:
    return subprocess.run(["nsenter", "-t", str(pause_pid), "-n", "-i", "-u", *cmd],
                          capture_output=True, text=True, check=True).stdout


def test_pod_namespaces_differ_from_host_and_are_pinned(env: ShimEnv) -> None:
    client, info = env.spawn("nsnew")
    pause = info["pause_pid"]
    for name in ("net", "ipc", "uts"):
        assert ns_link(pause, name) != ns_link("self", name)
        pinned = info["ns"][name]
        assert os.stat(pinned).st_ino == os.stat(f"/proc/{pause}/ns/{name}").st_ino
    assert ns_link(pause, "pid") == ns_link("self", "pid")  # pid: container mode
    # own mount namespace, empty root: /proc/<pause>/root and cwd lead nowhere on the host
    assert ns_link(pause, "mnt") != ns_link("self", "mnt")
    host_root = os.stat("/")
    for link in ("root", "cwd"):
        st = os.stat(f"/proc/{pause}/{link}")
        assert (st.st_dev, st.st_ino) != (host_root.st_dev, host_root.st_ino)
    assert os.listdir(f"/proc/{pause}/root") == []
    hello = client.hello()
    assert hello.pause_pid == pause and hello.shim_pid == info["pid"]
    assert hello.pod_id == "nsnew" and set(hello.ns) == {"net", "ipc", "uts"}
    assert in_pod(pause, "hostname").strip() == "testpod"
    # the shim has a session of its own (kill -9 of the zygote: see the survival test)
    def stat(pid: int) -> list[str]:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...

    shim_stat = stat(info["pid"])
    assert shim_stat[3] != stat(env.zygote_pid)[3] and int(shim_stat[3]) == info["pid"]

    ns_dir = env.pods["nsnew"]["spec"]["ns_dir"]
    assert len(mounted_under(ns_dir)) == 3
    client.shutdown(grace=0)
    assert wait_gone([pause])
    assert not process_gone(info["pid"])  # the pod ended, not the monitor
    assert mounted_under(ns_dir) == []
    assert not os.path.exists(ns_dir)
    assert not os.path.exists(os.path.join(env.pods["nsnew"]["spec"]["shim_dir"], "shim.sock"))
    with pytest.raises(errors.Unavailable):
        client.hello()


def test_pid_pod_mode_makes_pause_holder_pid_1_and_it_reaps(env: ShimEnv) -> None:
    client, info = env.spawn("pidpod", pid="pod")
    pause = info["pause_pid"]
    with open(f"/proc/{pause}/status") as f:
        nspid = next(ln for ln in f if ln.startswith("NSpid:")).split()[1:]
    assert nspid == [str(pause), "1"]
    assert ns_link(pause, "pid") != ns_link("self", "pid")
    # the pause-holder is the tiny static program, not a Python process
    with open(f"/proc/{pause}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"pycri-pause"
    with open(f"/proc/{pause}/status") as f:
        rss_kb = int(next(ln for ln in f if ln.startswith("VmRSS:")).split()[1])
    assert rss_kb < 1024
    # an orphan in the pod PID namespace is re-parented to the pause-holder and reaped by it
    subprocess.run(["nsenter", "-t", str(pause), "-p", "--", "sh", "-c", "sleep 0.77 &"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    deadline = time.monotonic() + 5
    host_pid = None
    while host_pid is None and time.monotonic() < deadline:  # until the child has exec'd
        host_pid = _pid_in_ns_running(pause, b"sleep\x000.77\x00")
    assert host_pid is not None
    with open(f"/proc/{host_pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == pause  # ppid
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{host_pid}"):  # gone entirely: no zombie left
        assert time.monotonic() < deadline, "orphan not reaped by the pause-holder"
        time.sleep(0.02)
    client.shutdown(grace=0)
    assert wait_gone([pause])


def _pid_in_ns_running(pause: int, cmdline: bytes) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() == cmdline and ns_link(entry, "pid") == ns_link(pause, "pid"):
                    return int(entry)
        except OSError:
            continue
    return None


def test_host_network_pod_shares_host_namespaces(env: ShimEnv) -> None:
    client, info = env.spawn("hostnet", network="node", ipc="node", pid="node")
    assert info["pause_pid"] is None and info["ns"] == {}
    assert client.hello().ns == {}
    client.shutdown(grace=0)
    assert not os.path.exists(os.path.join(env.pods["hostnet"]["spec"]["shim_dir"], "shim.sock"))
    assert not process_gone(info["pid"])  # the monitor serves on (with zero pods)


def test_sysctls_applied_inside_the_pod_only(env: ShimEnv) -> None:
    with open("/proc/sys/kernel/shmmax") as f:
        host_shmmax = f.read().strip()
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        host_port_start = f.read().strip()
    assert host_shmmax != "12345678" and host_port_start != "2000"
    client, info = env.spawn("sysctl", sysctls={"kernel.shmmax": "12345678",
                                                "net/ipv4/ip_unprivileged_port_start": "2000"})
    got = in_pod(info["pause_pid"], "cat", "/proc/sys/kernel/shmmax",
                 "/proc/sys/net/ipv4/ip_unprivileged_port_start").split()
    assert got == ["12345678", "2000"]
    with open("/proc/sys/kernel/shmmax") as f:
        assert f.read().strip() == host_shmmax
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        assert f.read().strip() == host_port_start
    client.shutdown(grace=0)
    assert wait_gone([info["pause_pid"]])


@pytest.mark.parametrize("sysctls,needle", [
    ({"kernel.panic": "1"}, "not namespaced"),
    ({"net.ipv4.no_such_knob": "1"}, "no_such_knob"),
])
def test_bad_sysctl_fails_spawn_and_leaves_nothing(env: ShimEnv, sysctls: dict[str, str],
                                                   needle: str) -> None:
    spec = env.pod_spec("badsysctl", sysctls=sysctls)
    with pytest.raises(ZygoteError, match=needle):
        env.zygote.spawn_shim(PodSpec.from_json(spec))
    assert mounted_under(spec["ns_dir"]) == []
    assert not os.path.exists(spec["ns_dir"])
    assert not os.path.exists(os.path.join(spec["shim_dir"], "shim.sock"))


def test_bad_pod_spec_is_refused_by_zygote(env: ShimEnv) -> None:
    with pytest.raises(ZygoteError, match="shim_dir"):
        env.spawn_json({"pod_id": "x", "ns_dir": "/tmp/x"})
    spec = env.pod_spec("badmode")
    spec["namespaces"]["pid"] = "sideways"
    with pytest.raises(ZygoteError, match=r"namespaces\.pid"):
        env.spawn_json(spec)


def test_shim_survives_kill_9_of_zygote_and_reconnects() -> None:
    e = ShimEnv()
    try:
        _, info = e.spawn("survivor")
        os.kill(e.zygote_pid, signal.SIGKILL)
        assert wait_gone([e.zygote_pid])
        # a "restarted daemon": new client objects, same shim
        again = ShimClient(e.pods["survivor"]["spec"]["shim_dir"])
        assert again.hello().shim_pid == info["pid"]
        assert shim_pid(e.pods["survivor"]["spec"]["shim_dir"]) == info["pid"]
        assert not process_gone(info["pause_pid"])
        # a new zygote can be started on the same state dir
        z2 = start_zygote(os.path.join(e.base, "state"))
        assert z2.ping() != e.zygote_pid
        z2.stop()
        assert z2.process is not None and z2.process.returncode == 0
    finally:
        e.close()


def test_kill_9_of_shim_leaves_pod_and_containers_running_and_keepers_record_exits(
        env: ShimEnv) -> None:
    """The pause-holder and the containers outlive kill -9 of the shim (no PDEATHSIG; each
    container's parent is its keeper, runtime/keeper/keeper.c), and the exit of a container
    that ends while no shim runs is recorded by its keeper with the right code."""
    client, info = env.spawn("shimdies")
    shim_dir = env.pods["shimdies"]["spec"]["shim_dir"]
    ns_dir = env.pods["shimdies"]["spec"]["ns_dir"]
    script = "trap 'exit 7' TERM; while :; do sleep 0.05; done"
    spec = env.container_spec("c1", "shimdies", ["sh", "-c", script], log=False)
    client.create("c1", spec)
    client.start("c1")
    client.create("c2", env.container_spec("c2", "shimdies", ["sleep", "300"], log=False))
    client.start("c2")
    states = client.state()
    pids = {cid: states[cid].pid for cid in ("c1", "c2")}
    keepers = {cid: int(Path(shim_dir, "containers", f"{cid}.keeper").read_text())
               for cid in pids}
    for cid, pid in pids.items():  # the keeper is the container's parent, not the shim
        with open(f"/proc/{pid}/status") as f:
            ppid = int(next(ln for ln in f if ln.startswith("PPid:")).split()[1])
        assert ppid == keepers[cid]
    os.kill(info["pid"], signal.SIGKILL)
    try:
        assert wait_gone([info["pid"]])
        with pytest.raises(errors.Unavailable):
            ShimClient(shim_dir).hello()
        time.sleep(0.3)
        assert not any(process_gone(p) for p in [info["pause_pid"], *pids.values(),
                                                 *keepers.values()])
        assert ns_link(info["pause_pid"], "net") == ns_link(pids["c2"], "net")
        os.kill(pids["c1"], signal.SIGTERM)  # c1 exits while its shim is gone
        assert wait_gone([pids["c1"]])
        deadline = time.monotonic() + 10
        while read_final_states(shim_dir)["c1"].exit_code != 7:
            assert time.monotonic() < deadline, read_final_states(shim_dir)["c1"]
            time.sleep(0.05)
        final = read_final_states(shim_dir)
        assert (final["c1"].state, final["c1"].exit_code, final["c1"].reason) == (
            "exited", 7, "Error")
        assert final["c1"].finished_at >= final["c1"].started_at > 0
        assert final["c2"].state == "exited" and "shim" in final["c2"].message
        assert not process_gone(pids["c2"]) and not process_gone(info["pause_pid"])
    finally:
        # the daemon's cleanup path for a dead shim: containers (by cgroup), then keepers
        # and the pause-holder, then the pins
        from cri_server.sandboxes.shim_process import kill_pod_processes
        from runtime.shim import namespaces
        for pid in pids.values():
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
        kill_pod_processes(shim_dir)
        assert wait_gone([info["pause_pid"], *pids.values(), *keepers.values()])
        namespaces.unpin_all(ns_dir)
        assert mounted_under(ns_dir) == []
        del env.pods["shimdies"]


def test_pause_holder_joins_the_pod_cgroup(env: ShimEnv) -> None:
    from runtime import cgroups

    path = f"/pycri-shimtest-{os.getpid()}"
    cgroups.create_cgroup(path)
    try:
        spec = env.pod_spec("cgpod")
        spec["cgroup"] = {"driver": "cgroupfs", "parent": "/", "path": path}
        info = env.zygote.spawn_shim_info(PodSpec.from_json(spec))
        env.pods["cgpod"] = {"spec": spec, "info": info}
        with open(f"/proc/{info['pause_pid']}/cgroup") as f:
            assert any(line.rstrip().endswith(":" + path) for line in f)
        ShimClient(spec["shim_dir"]).shutdown(grace=0)
        del env.pods["cgpod"]
        assert wait_gone([info["pause_pid"]])
    finally:
        cgroups.remove_cgroup(path)


def test_second_shim_for_the_same_pod_is_refused(env: ShimEnv) -> None:
    client, info = env.spawn("twice")
    with pytest.raises(ZygoteError, match="already running"):
        env.zygote.spawn_shim(PodSpec.from_json(env.pods["twice"]["spec"]))
    assert client.hello().shim_pid == info["pid"]
    assert len(mounted_under(env.pods["twice"]["spec"]["ns_dir"])) == 3
    client.shutdown(grace=0)
    assert wait_gone([info["pause_pid"]])


def _zygote_children(env: ShimEnv) -> list[int]:
    """Processes forked from this env's zygote (shims), by their inherited command line."""
    marker = os.path.join(env.base, "state", "zygote.sock").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != env.zygote_pid:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return [p for p in found if not process_gone(p)]


def test_requester_gone_before_ready_leaves_no_shim(env: ShimEnv) -> None:
    before = _zygote_children(env)
    spec = env.pod_spec("abandoned")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(env.zygote.socket_path)
    sock.sendall(json.dumps({"op": "spawn_shim", "pod": spec}).encode() + b"\n")
    sock.close()
    deadline = time.monotonic() + 10
    while not os.path.exists(os.path.join(spec["shim_dir"], "shim.log")):  # the shim started
        assert time.monotonic() < deadline, "the zygote did not start the shim"
        time.sleep(0.005)
    while _zygote_children(env) != before or mounted_under(spec["ns_dir"]) or \
            os.path.exists(os.path.join(spec["shim_dir"], "shim.sock")):
        assert time.monotonic() < deadline, "the abandoned shim was not stopped"
        time.sleep(0.02)
    assert env.zygote.ping() == env.zygote_pid  # the zygote keeps serving


def test_unknown_op_and_bad_requests(env: ShimEnv) -> None:
    client, info = env.spawn("badops")
    with pytest.raises(errors.InvalidArgument, match="unknown op"):
        client.call("frobnicate")
    with pytest.raises(errors.NotFound):
        client.state("nope")
    # what a daemon could send wrong: raw lines, past ShimClient's typed ops
    with pytest.raises(errors.InvalidArgument, match="container_id must be"):
        client.call("create", container_id="../x", spec={})
    with pytest.raises(errors.InvalidArgument, match="ContainerSpec object"):
        client.call("create", container_id="x", spec="not a spec")
    with pytest.raises(errors.InvalidArgument, match="container spec"):
        client.call("create", container_id="x", spec={"id": "x"})
    assert client.delete("never-existed") is False
    client.shutdown(grace=0)
    assert wait_gone([info["pause_pid"]])
