"""Helpers for container tests: test images, a pod with pulled images, config builders.

    with ContainerEnv(cri) as env:               # registry + images pulled + one pod
        cid = env.run(["sh", "-c", "echo hi"])   # create + start, returns the id
        env.wait_exit(cid); env.status(cid).exit_code; env.log_lines(cid)

Images (pushed to a registry on 127.0.0.1, all sharing one busybox layer):
- env.busybox: Debian's dynamic busybox + libs, Cmd ["sh"];
- env.merge: Entrypoint ["/bin/echo", "ep"], Cmd ["c1", "c2"], Env IMG=img and OVR=img,
  WorkingDir /work/dir (missing from the rootfs), StopSignal SIGUSR1, Volume /vol;
- env.wwwdata: USER www-data;
- env.groups: an /etc/group where www-data is also a member of "extra" (5000).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import grpc

from proto import api_pb2
from tests.support import oci_build as ob
from tests.support import pods
from tests.support.cri_client import CriClient
from tests.support.daemon import SLOWDOWN
from tests.support.registry import Registry

CRI_LOG_LINE = re.compile(
    rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$")


def security(**kw: Any) -> api_pb2.LinuxContainerSecurityContext:
    return api_pb2.LinuxContainerSecurityContext(**kw)


class ContainerEnv:
    def __init__(self, cri: CriClient, pod_config: api_pb2.PodSandboxConfig | None = None,
                 log_dir: Path | None = None) -> None:
        self.cri = cri
        self.registry = Registry()
        self.pod_config = pod_config or pods.pod_config(hostname="ctr-test-pod")
        self._given_log_dir = log_dir
        self.log_dir = log_dir or Path()   # a temporary dir of its own from __enter__ on
        self.pod_id = ""
        self.created: list[str] = []
        self._names = 0

    # -- set-up ----------------------------------------------------------------
    def __enter__(self) -> ContainerEnv:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        import tempfile
        self.registry.start()
        base = ob.Layer.build(ob.busybox_rootfs_files())
        images = {
            "busybox": ob.Image([base], ob.Config(cmd=["sh"], env=["PATH=/bin"])),
            "merge": ob.Image([base], ob.Config(
                entrypoint=["/bin/echo", "ep"], cmd=["c1", "c2"],
                env=["PATH=/bin", "IMG=img", "OVR=img"], working_dir="/work/dir",
                stop_signal="SIGUSR1", volumes=["/vol"])),
            "wwwdata": ob.Image([base], ob.Config(cmd=["sh"], env=["PATH=/bin"],
                                                  user="www-data")),
            "groups": ob.Image([base, ob.Layer.build([ob.File(
                "etc/group", "root:x:0:\nwww-data:x:33:\nextra:x:5000:www-data\n")])],
                ob.Config(cmd=["sh"], env=["PATH=/bin"])),
        }
        self.refs: dict[str, str] = {}
        self.image_ids: dict[str, str] = {}
        for name, image in images.items():
            ob.push_image(self.registry.url, f"ctr/{name}", "v1", image)
            ref = f"{self.registry.host}/ctr/{name}:v1"
            self.refs[name] = ref
            self.cri.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)))
            self.image_ids[name] = image.config_digest
        self.busybox, self.merge, self.wwwdata, self.groups = (
            self.refs[n] for n in ("busybox", "merge", "wwwdata", "groups"))
        if self._given_log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="pycri-ctr-logs-"))
            self._own_log_dir = True
        self.pod_config.log_directory = str(self.log_dir)
        self.pod_id = pods.run_pod(self.cri, self.pod_config)

    def close(self) -> None:
        import shutil
        try:
            if self.pod_id:
                for cid in self.created:
                    try:
                        self.cri.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
                    except grpc.RpcError:
                        pass  # best effort: the pod removal follows
                pods.stop_and_remove(self.cri, self.pod_id)
                self.pod_id = ""
            # Images stay: another env may hold the same image (same ID) under its own
            # registry's name, and RemoveImage removes every name of an image.
        finally:
            self.registry.stop()
            if getattr(self, "_own_log_dir", False) and self.log_dir is not None:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    # -- containers --------------------------------------------------------------
    def config(self, command: list[str] | None = None, image: str | None = None,
               name: str | None = None, **kw: Any) -> api_pb2.ContainerConfig:
        self._names += 1
        name = name or f"c{self._names}"
        cfg = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=name),
            image=api_pb2.ImageSpec(image=image or self.busybox),
            log_path=f"{name}/0.log", **kw)
        if command is not None:
            cfg.command.extend(command)
        return cfg

    def create(self, config: api_pb2.ContainerConfig, pod_id: str | None = None,
               pod_config: api_pb2.PodSandboxConfig | None = None) -> str:
        cid = self.cri.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id or self.pod_id, config=config,
            sandbox_config=pod_config or self.pod_config)).container_id
        self.created.append(cid)
        return str(cid)

    def start_container(self, cid: str) -> None:
        self.cri.StartContainer(api_pb2.StartContainerRequest(container_id=cid))

    def run(self, command: list[str] | None = None, **kw: Any) -> str:
        cid = self.create(self.config(command, **kw))
        self.start_container(cid)
        return cid

    def status(self, cid: str) -> api_pb2.ContainerStatus:
        return self.cri.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status

    def info(self, cid: str) -> dict[str, Any]:
        resp = self.cri.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid,
                                                                       verbose=True))
        return dict(json.loads(resp.info["info"]))

    def wait_exit(self, cid: str, timeout: float = 10.0) -> api_pb2.ContainerStatus:
        deadline = time.monotonic() + timeout * SLOWDOWN
        while True:
            st = self.status(cid)
            if st.state == api_pb2.CONTAINER_EXITED:
                return st
            assert time.monotonic() < deadline, f"container {cid} still {st.state}"
            time.sleep(0.05)

    def remove(self, cid: str) -> None:
        self.cri.RemoveContainer(api_pb2.RemoveContainerRequest(container_id=cid))
        if cid in self.created:
            self.created.remove(cid)

    def output(self, command: list[str] | None, timeout: float = 10.0, **kw: Any) -> str:
        """Runs a container to completion and returns its stdout (from the CRI log)."""
        cid = self.run(command, **kw)
        st = self.wait_exit(cid, timeout)
        text = "".join(line for stream, line in self.log_lines(cid) if stream == "stdout")
        self.remove(cid)
        assert st.exit_code == 0, f"exit {st.exit_code}: {text}"
        return text

    def run_until_oom_killed(self, limit: int = 32 << 20) -> str:
        """A container that allocates 128 MiB under a `limit` without swap: it must end
        137 OOMKilled. Returns its id, removed."""
        res = api_pb2.LinuxContainerResources(memory_limit_in_bytes=limit,
                                              memory_swap_limit_in_bytes=limit)
        cid = self.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
                       linux=api_pb2.LinuxContainerConfig(resources=res))
        st = self.wait_exit(cid, timeout=60)
        assert (st.exit_code, st.reason) == (137, "OOMKilled"), st
        self.remove(cid)
        return cid

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 10) -> api_pb2.ExecSyncResponse:
        return self.cri.ExecSync(api_pb2.ExecSyncRequest(container_id=cid, cmd=cmd,
                                                         timeout=int(timeout * SLOWDOWN)))

    def log_path(self, cid: str) -> Path:
        return Path(self.status(cid).log_path)

    def log_lines(self, cid: str, path: Path | None = None) -> list[tuple[str, str]]:
        """(stream, text) per CRI log record; partial (P) records joined to their line."""
        out: list[tuple[str, str]] = []
        partial: dict[str, str] = {}
        raw = (path or self.log_path(cid)).read_bytes()
        for line in raw.splitlines():
            m = CRI_LOG_LINE.match(line)
            assert m, f"not a CRI log line: {line[:200]!r}"
            stream, tag, text = m.group(4).decode(), m.group(5), m.group(6).decode()
            if tag == b"P":
                partial[stream] = partial.get(stream, "") + text
                continue
            out.append((stream, partial.pop(stream, "") + text + "\n"))
        return out


def proc_status(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = value.strip()
    return out
