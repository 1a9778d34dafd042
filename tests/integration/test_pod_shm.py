"""One /dev/shm per pod, shared by its containers (like containerd); host IPC pods get the
host's; the pod's tmpfs is gone after the pod is removed."""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.containers import ContainerEnv


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[ContainerEnv]:  # type: ignore[no-untyped-def]
    with ContainerEnv(daemon.c) as e:
        yield e


def _new_pod(env: ContainerEnv, **kw: object) -> tuple[str, api_pb2.PodSandboxConfig]:
    cfg = pods.pod_config(**kw)  # type: ignore[arg-type]
    cfg.log_directory = str(env.log_dir)
    return pods.run_pod(env.cri, cfg), cfg


def _output_in(env: ContainerEnv, pod: tuple[str, api_pb2.PodSandboxConfig],
               command: list[str]) -> str:
    """Runs a container to completion in another pod of the env; returns its stdout."""
    cid = env.create(env.config(command), pod_id=pod[0], pod_config=pod[1])
    env.start_container(cid)
    st = env.wait_exit(cid)
    text = "".join(line for stream, line in env.log_lines(cid) if stream == "stdout")
    env.remove(cid)
    assert st.exit_code == 0, f"exit {st.exit_code}: {text}"
    return text


def _mount_points() -> set[str]:
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


def _shm_of(daemon, pod_id: str) -> Path:  # type: ignore[no-untyped-def]
    return Path(daemon.state) / "shm" / pod_id


def test_containers_of_a_pod_share_dev_shm_and_other_pods_do_not(daemon, env: ContainerEnv
                                                                  ) -> None:  # type: ignore[no-untyped-def]
    shm = _shm_of(daemon, env.pod_id)
    assert str(shm) in _mount_points()
    writer = env.run(["sh", "-c", "echo shared > /dev/shm/hello && sleep 1000"])
    assert pods.wait_until(lambda: (shm / "hello").exists())
    out = env.output(["sh", "-c", ("cat /dev/shm/hello; grep ' /dev/shm ' /proc/self/mounts "
                                   "| cut -d' ' -f3,4")])
    lines = out.splitlines()
    assert lines[0] == "shared"
    fstype, opts = lines[1].split()
    assert fstype == "tmpfs" and {"nosuid", "nodev", "noexec"} <= set(opts.split(","))
    assert "size=65536k" in opts.split(",")
    env.remove(writer)

    other_pod = _new_pod(env, hostname="other-pod")
    other = other_pod[0]
    try:
        out = _output_in(env, other_pod, ["sh", "-c", "ls -A /dev/shm; echo end"])
        assert out == "end\n"
        other_shm = _shm_of(daemon, other)
        assert str(other_shm) in _mount_points()
    finally:
        pods.stop(env.cri, other)
    assert str(other_shm) not in _mount_points()  # unmounted at stop already
    pods.remove(env.cri, other)
    assert not other_shm.exists()


def test_pod_shm_is_gone_after_removal(daemon, env: ContainerEnv) -> None:  # type: ignore[no-untyped-def]
    pod = _new_pod(env, hostname="gone-pod")
    pod_id = pod[0]
    shm = _shm_of(daemon, pod_id)
    try:
        _output_in(env, pod, ["sh", "-c", "echo x > /dev/shm/f"])
        assert (shm / "f").read_text() == "x\n"
    finally:
        pods.stop_and_remove(env.cri, pod_id)
    assert str(shm) not in _mount_points()
    assert not shm.exists()


def test_host_ipc_pod_uses_the_host_dev_shm(daemon, env: ContainerEnv) -> None:  # type: ignore[no-untyped-def]
    name = f"pycri-shm-test-{uuid.uuid4().hex[:8]}"
    host_file = Path("/dev/shm") / name
    host_file.write_text("from-host\n")
    pod = _new_pod(env, hostname="hostipc", ipc=api_pb2.NODE)
    pod_id = pod[0]
    try:
        assert not _shm_of(daemon, pod_id).exists()  # no pod tmpfs for host IPC
        out = _output_in(env, pod, ["cat", f"/dev/shm/{name}"])
        assert out == "from-host\n"
    finally:
        pods.stop_and_remove(env.cri, pod_id)
        os.unlink(host_file)


def test_leftover_pod_shm_is_unmounted_at_start_up(fresh_daemon) -> None:  # type: ignore[no-untyped-def]
    d = fresh_daemon
    orphan = Path(d.state) / "shm" / ("f" * 64)
    orphan.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "shm", str(orphan)], check=True)
    try:
        d.start()
        assert str(orphan) not in _mount_points() and not orphan.exists()
    finally:
        if str(orphan) in _mount_points():
            subprocess.run(["umount", "-l", str(orphan)], check=False)
