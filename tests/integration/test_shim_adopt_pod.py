"""Adoption at the shim's level (runtime.shim.adopt through the zygote's spawn_shim in adopt
mode, no daemon; a shim here is the monitor serving the pod): the rules for what a dead
monitor cannot hand over, and a pod PID namespace."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from pycri_common import errors
from runtime.pod_spec import PodSpec
from runtime.shim import frames
from runtime.shim_client import ShimClient
from tests.integration.shim_support import ShimEnv, process_gone, read_cri_log, wait_gone


def _adopt(env: ShimEnv, pod_id: str) -> dict[str, object]:
    """kill -9 of the pod's shim, then a successor in adopt mode; its spawn reply."""
    pod = env.pods[pod_id]
    old = pod["info"]["pid"]
    os.kill(old, signal.SIGKILL)
    assert wait_gone([old])
    info = env.zygote.spawn_shim_info(PodSpec.from_json(pod["spec"]), adopt=True)
    assert info["pid"] != old and info["pause_pid"] == pod["info"]["pause_pid"]
    pod["info"] = info
    return info


def _text(path: str | None) -> str:
    """The log's text, records joined (a line may be P records then an F)."""
    return "".join(x + ("\n" if t == "F" else "") for _, _, t, x in read_cri_log(path))


def test_tty_stdin_goes_on_pipes_stdin_is_closed_and_pid_namespace(shim_env: ShimEnv) -> None:
    env = shim_env
    client, info = env.spawn("adtty", pid="pod")
    tty = env.container_spec("tty", "adtty", ["sh", "-c", "while read x; do echo got:$x; done"],
                             tty=True, stdin=True)
    piped = env.container_spec("pipe", "adtty", ["sh", "-c", "cat; echo stdin-closed; sleep 1000"],
                               stdin=True)
    for cid, spec in (("tty", tty), ("pipe", piped)):
        client.create(cid, spec)
        client.start(cid)
    pids = [client.state(c)[c].pid for c in ("tty", "pipe")]
    new = _adopt(env, "adtty")
    client = ShimClient(env.pods["adtty"]["spec"]["shim_dir"])
    assert client.hello().shim_pid == new["pid"]
    states = client.state()
    assert {c: s.state for c, s in states.items()} == {"tty": "running", "pipe": "running"}
    stream = client.attach("tty")
    stream.send_stdin(b"hello\n")
    got = b""
    deadline = time.monotonic() + 10
    while b"got:hello" not in got:
        assert time.monotonic() < deadline, got
        frame = stream.recv_frame(timeout=10)
        assert frame is not None
        if frame[0] == frames.STDOUT:
            got += frame[1]
    stream.close()
    deadline = time.monotonic() + 10
    while "stdin-closed" not in _text(piped.log_path):
        assert time.monotonic() < deadline, "the dead shim's stdin pipe did not close"
        time.sleep(0.05)
    assert "got:hello" in _text(tty.log_path)
    client.kill("tty", signal.SIGKILL)
    assert client.wait("tty", 10).exit_code == 137
    ShimClient(env.pods["adtty"]["spec"]["shim_dir"]).shutdown(grace=0)
    info = env.pods.pop("adtty")["info"]
    assert wait_gone([info["pause_pid"], *pids])


def test_keeper_killed_while_no_shim_ran_and_an_unfinished_create(shim_env: ShimEnv) -> None:
    """A container whose keeper was SIGKILLed while no shim ran is recorded exited 255 (its
    fate cannot be known); a keeper with no status file (a create the dead shim never
    finished) is ended and its files removed; a created container's init gave up: exit 1."""
    env = shim_env
    client, info = env.spawn("adkeep")
    shim_dir = env.pods["adkeep"]["spec"]["shim_dir"]
    cdir = os.path.join(shim_dir, "containers")
    for cid in ("lost", "made"):
        client.create(cid, env.container_spec(cid, "adkeep", ["sleep", "1000"], log=False))
    client.start("lost")
    lost_pid = client.state("lost")["lost"].pid
    keeper = int(Path(cdir, "lost.keeper").read_text())
    os.kill(info["pid"], signal.SIGKILL)
    assert wait_gone([info["pid"]])
    os.kill(keeper, signal.SIGKILL)
    assert wait_gone([keeper])
    # what a create the dead shim never finished leaves: a keeper pid file, no status file
    with open(os.path.join(cdir, "ghost.keeper"), "w") as f:
        f.write(str(keeper))  # a dead (or recycled) pid: the command line check refuses it
    env.pods["adkeep"]["info"] = env.zygote.spawn_shim_info(
        PodSpec.from_json(env.pods["adkeep"]["spec"]), adopt=True)
    client = ShimClient(shim_dir)
    st = client.wait("lost", 10)
    assert (st.state, st.exit_code) == ("exited", 255) and "keeper" in st.message
    st = client.wait("made", 10)
    assert (st.state, st.exit_code) == ("exited", 1)
    assert not os.path.exists(os.path.join(cdir, "ghost.keeper"))
    with pytest.raises(errors.FailedPrecondition):
        client.start("made")
    status = json.loads(Path(cdir, "lost.json").read_text())
    assert status["exit_code"] == 255
    if not process_gone(lost_pid):  # no cgroup here to kill it through (the daemon's has)
        os.kill(lost_pid, signal.SIGKILL)
    client.shutdown(grace=0)
    info = env.pods.pop("adkeep")["info"]
    assert wait_gone([info["pause_pid"], lost_pid])
