"""Pods with their own user namespace (userns_options POD, kubelet's hostUsers: false), through
the gRPC API with real namespaces, idmapped mounts and processes (issue 15)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from proto import api_pb2
from tests.integration.test_pods_recovery import FakeNet, _teardown
from tests.support import pods
from tests.support.containers import ContainerEnv, proc_status
from tests.support.cri_client import CriClient
from tests.support.daemon import PycriDaemon

# kubelet's layout: 65536 IDs at a multiple of 65536 (far from the IDs tests use elsewhere)
HOST_A = 65536 * 40
HOST_B = 65536 * 41
LENGTH = 65536


def userns_pod_config(host_id: int, length: int = LENGTH, **kw: object) -> api_pb2.PodSandboxConfig:
    cfg = pods.pod_config(**kw)  # type: ignore[arg-type]
    u = cfg.linux.security_context.namespace_options.userns_options
    u.mode = api_pb2.POD
    u.uids.add(container_id=0, host_id=host_id, length=length)
    u.gids.add(container_id=0, host_id=host_id, length=length)
    return cfg


class UsernsEnv(ContainerEnv):
    """A ContainerEnv whose pod has its own user namespace; containers repeat the pod's
    namespace options as kubelet does."""

    def config(self, command: list[str] | None = None, image: str | None = None,
               name: str | None = None, **kw: object) -> api_pb2.ContainerConfig:
        cfg = super().config(command, image, name, **kw)
        cfg.linux.security_context.namespace_options.CopyFrom(
            self.pod_config.linux.security_context.namespace_options)
        return cfg

    def container_pid(self, cid: str) -> int:
        return int(self.info(cid)["pid"])


@pytest.fixture(scope="module")
def env(daemon) -> Iterator[UsernsEnv]:  # type: ignore[no-untyped-def]
    e = UsernsEnv(daemon.c, pod_config=userns_pod_config(HOST_A, hostname="uns-a"))
    with e:
        yield e


@pytest.fixture
def host_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pycri-userns-"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _bind(host: Path, dest: str, readonly: bool = False) -> api_pb2.Mount:
    return api_pb2.Mount(host_path=str(host), container_path=dest, readonly=readonly)


def _sleeper(env: UsernsEnv, **kw: object) -> str:
    cid = env.run(["sleep", "600"], **kw)
    assert pods.wait_until(lambda: env.status(cid).state == api_pb2.CONTAINER_RUNNING)
    return cid


# -- runtime status ----------------------------------------------------------------------------

def test_status_reports_user_namespace_support(cri: CriClient) -> None:
    resp = cri.Status(api_pb2.StatusRequest(verbose=True))
    assert resp.runtime_handlers, "no runtime handlers reported"
    assert all(h.features.user_namespaces for h in resp.runtime_handlers)
    assert json.loads(resp.info["userNamespaces"]) == {"supported": True, "reason": ""}


# -- identities ----------------------------------------------------------------------------------

def test_maps_match_and_root_inside_is_the_mapped_id_outside(env: UsernsEnv) -> None:
    cid = _sleeper(env)
    try:
        out = env.exec_sync(cid, ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id"])
        assert out.exit_code == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        assert [line.split() for line in lines[:2]] == [["0", str(HOST_A), str(LENGTH)]] * 2
        assert lines[2].startswith("uid=0(root) gid=0(root)")
        status = proc_status(Path(f"/proc/{env.container_pid(cid)}/status").read_text())
        assert status["Uid"].split() == [str(HOST_A)] * 4
        assert status["Gid"].split() == [str(HOST_A)] * 4
        # the pod's namespaces are owned by its user namespace
        pod = pods.info(env.cri, env.pod_id)
        pid = env.container_pid(cid)
        assert pods.ns_inode(pid, "user") == pods.ns_inode(pod["pid"], "user")
        assert pods.ns_inode(pid, "user") != pods.ns_inode("self", "user")
        assert pods.ns_inode(pid, "net") == pods.ns_inode(pod["pid"], "net")
    finally:
        env.remove(cid)


def test_run_as_user_inside_maps_to_the_range(env: UsernsEnv) -> None:
    from tests.support.containers import security
    out = env.output(["sh", "-c", "id -u; id -g; cat /proc/self/status | grep -E '^(Uid|Gid)'"],
                     linux=api_pb2.LinuxContainerConfig(security_context=security(
                         run_as_user=api_pb2.Int64Value(value=1000),
                         run_as_group=api_pb2.Int64Value(value=2000),
                         namespace_options=env.pod_config.linux.security_context
                         .namespace_options)))
    lines = out.splitlines()
    assert lines[:2] == ["1000", "2000"]
    assert lines[2].split()[1:] == ["1000"] * 4  # seen from inside: container IDs


def test_pod_pid_namespace_and_namespaced_sysctls(daemon) -> None:  # type: ignore[no-untyped-def]
    """The pod's ipc and net namespaces belong to its user namespace: namespaced sysctls are
    written from inside it; the pause-holder is PID 1 as the namespace's root."""
    cfg = userns_pod_config(HOST_B, pid=api_pb2.POD,
                            sysctls={"net.ipv4.ip_unprivileged_port_start": "0",
                                     "kernel.shm_rmid_forced": "1"})
    e = UsernsEnv(daemon.c, pod_config=cfg)
    with e:
        out = e.output(["sh", "-c", ("cat /proc/sys/net/ipv4/ip_unprivileged_port_start "
                        "/proc/sys/kernel/shm_rmid_forced; ps -o pid,user,args | grep pycri-pause")])
        lines = out.splitlines()
        assert lines[:2] == ["0", "1"]
        assert lines[2].split()[:2] == ["1", "root"]
        pause = pods.info(daemon.c, e.pod_id)["pid"]
        assert proc_status(Path(f"/proc/{pause}/status").read_text())["Uid"].split() == \
            [str(HOST_B)] * 4


def test_pod_and_container_status_report_the_mappings(env: UsernsEnv) -> None:
    opts = pods.status(env.cri, env.pod_id).status.linux.namespaces.options.userns_options
    assert opts.mode == api_pb2.POD
    assert [(m.container_id, m.host_id, m.length) for m in opts.uids] == [(0, HOST_A, LENGTH)]
    assert [(m.container_id, m.host_id, m.length) for m in opts.gids] == [(0, HOST_A, LENGTH)]
    assert pods.info(env.cri, env.pod_id)["userNamespace"]["uids"] == [[0, HOST_A, LENGTH]]
    cid = env.create(env.config(["true"]))
    try:
        info = env.info(cid)
        userns = info["runtimeSpec"]["userns"]
        assert userns["uid_map"] == userns["gid_map"] == [[0, HOST_A, LENGTH]]
        assert info["userNamespace"] == {"mode": "pod", "uids": [[0, HOST_A, LENGTH]],
                                         "gids": [[0, HOST_A, LENGTH]]}
    finally:
        env.remove(cid)


# -- files ---------------------------------------------------------------------------------------

def test_file_ownership_in_writable_layer_and_volumes(env: UsernsEnv, host_dir: Path) -> None:
    (host_dir / "by-root").write_text("root's\n")
    (host_dir / "by-1234").write_text("1234's\n")
    os.chown(host_dir / "by-1234", 1234, 1234)
    cid = env.run(["sh", "-c", ("touch /new-in-layer /vol/new-in-volume; mkdir -p /made/dir; "
                   "ls -lnd /vol/by-root /vol/by-1234 /etc/hosts /bin")],
                  mounts=[_bind(host_dir, "/vol")])
    try:
        st = env.wait_exit(cid)
        out = "".join(line for _, line in env.log_lines(cid))
        assert st.exit_code == 0, out
        owners = {line.split()[-1]: (line.split()[2], line.split()[3])
                  for line in out.splitlines()}
        assert owners["/vol/by-root"] == ("0", "0")       # host root is root inside
        assert owners["/vol/by-1234"] == ("1234", "1234")  # volume IDs as on the host
        assert owners["/etc/hosts"] == ("0", "0")
        assert owners["/bin"] == ("0", "0")                # image layers: idmapped, not chowned
        upper = Path(env.info(cid)["runtimeSpec"]["rootfs"]["upper"])
        layer_file = (upper / "new-in-layer").stat()
        assert (layer_file.st_uid, layer_file.st_gid) == (HOST_A, HOST_A)
        assert (upper / "made" / "dir").stat().st_uid == HOST_A
        vol_file = (host_dir / "new-in-volume").stat()
        assert (vol_file.st_uid, vol_file.st_gid) == (0, 0)  # written back as host root
        # the shared image snapshot is untouched
        lower = env.info(cid)["runtimeSpec"]["rootfs"]["lower"]
        assert all(os.stat(d).st_uid == 0 for d in lower)
        assert all(os.stat(os.path.join(d, "bin")).st_uid == 0 for d in lower
                   if os.path.isdir(os.path.join(d, "bin")))
    finally:
        env.remove(cid)


def test_filesystems_inside_work(env: UsernsEnv) -> None:
    out = env.output(["sh", "-c",
                      ("echo x > /dev/shm/f && cat /dev/shm/f; "
                      "ls /proc/self/ns/user >/dev/null && echo proc; "
                      "cat /sys/class/net/lo/operstate >/dev/null && echo sys; "
                      "ls -d /dev/mqueue >/dev/null && echo mqueue; "
                      "echo t > /tmp/t && cat /tmp/t; "
                      "stat -c '%u %g' /dev /dev/shm; "
                      "cat /proc/kcore 2>/dev/null | wc -c; "
                      "touch /proc/sys/x 2>/dev/null || echo ro-sys")])
    assert out.split("\n") == ["x", "proc", "sys", "mqueue", "t", "0 0", "0 0", "0", "ro-sys",
                               ""]


def test_two_pods_cannot_read_each_others_files(env: UsernsEnv, daemon) -> None:  # type: ignore[no-untyped-def]
    cid = env.run(["sh", "-c", "echo secret > /secret && chmod 600 /secret"])
    try:
        assert env.wait_exit(cid).exit_code == 0
        upper = Path(env.info(cid)["runtimeSpec"]["rootfs"]["upper"])
        assert stat.S_IMODE((upper / "secret").stat().st_mode) == 0o600
        other = UsernsEnv(daemon.c, pod_config=userns_pod_config(HOST_B, hostname="uns-b"))
        with other:
            # pod B gets pod A's writable layer as a volume: A's root is nobody to B
            out = other.run(["sh", "-c", "ls -ln /a/secret; cat /a/secret; echo rc=$?"],
                            mounts=[_bind(upper, "/a")],
                            linux=api_pb2.LinuxContainerConfig(
                                security_context=api_pb2.LinuxContainerSecurityContext(
                                    capabilities=api_pb2.Capability(
                                        add_capabilities=["DAC_OVERRIDE", "DAC_READ_SEARCH"]),
                                    namespace_options=other.pod_config.linux.security_context
                                    .namespace_options)))
            other.wait_exit(out)
            text = "".join(line for _, line in other.log_lines(out))
            assert "secret" not in text.replace("/a/secret", ""), text
            assert "rc=1" in text
            assert text.split()[2:4] == ["65534", "65534"]  # unmapped owner
    finally:
        env.remove(cid)


def test_image_volumes_are_idmapped(env: UsernsEnv) -> None:
    def image(ref: str, dest: str, sub: str = "") -> api_pb2.Mount:
        return api_pb2.Mount(container_path=dest, readonly=True, image_sub_path=sub,
                             image=api_pb2.ImageSpec(image=ref))
    # env.groups has two layers (an overlay), env.busybox one (a bind)
    out = env.output(["sh", "-c", ("stat -c '%u %g %n' /iv/bin /iv/etc/group /ivs/group /ivb/bin;"
                      " grep -c extra /iv/etc/group")],
                     mounts=[image(env.groups, "/iv"), image(env.groups, "/ivs", "etc"),
                             image(env.busybox, "/ivb")])
    assert out.splitlines() == ["0 0 /iv/bin", "0 0 /iv/etc/group", "0 0 /ivs/group",
                                "0 0 /ivb/bin", "1"]


def test_streaming_exec_attach_and_port_forward(env: UsernsEnv) -> None:
    from tests.support.spdy_client import SpdyExec, SpdyPortForward
    cid = env.run(["sh", "-c", ("mkdir -p /tmp/www && echo userns-body > /tmp/www/index.html && "
                   "exec httpd -f -p 8080 -h /tmp/www")])
    try:
        url = str(env.cri.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["id", "-u"],
                                                   stdout=True, stderr=True)).url)
        ex = SpdyExec(url)
        assert b"0\n" in ex.read_until(b"0\n")
        ex.session.close()
        url = str(env.cri.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=env.pod_id,
                                                                 port=[8080])).url)
        with SpdyPortForward(url) as pf:
            body = b""
            for _ in range(100):
                body, _err = pf.request(8080, b"GET /index.html HTTP/1.0\r\n\r\n")
                if body:
                    break
                time.sleep(0.1)  # httpd not listening yet
            assert body.endswith(b"userns-body\n"), body
    finally:
        env.remove(cid)
    cid = env.run(["sh", "-c", "echo ready; cat"], stdin=True)
    try:
        url = str(env.cri.Attach(api_pb2.AttachRequest(container_id=cid, stdin=True,
                                                       stdout=True, stderr=True)).url)
        ex = SpdyExec(url, stdin=True)
        ex.write(b"attached\n")
        assert b"attached\n" in ex.read_until(b"attached\n")
        ex.close_stdin()
        ex.session.close()
    finally:
        env.remove(cid)


# -- security ------------------------------------------------------------------------------------

def test_host_root_actions_fail_inside(env: UsernsEnv) -> None:
    """Even with CAP_SYS_ADMIN, CAP_MKNOD, CAP_SYS_MODULE added, the capabilities are those of
    the pod's user namespace."""
    caps = api_pb2.Capability(add_capabilities=["SYS_ADMIN", "SYS_MODULE", "MKNOD",
                                                "NET_ADMIN"])
    # Unconfined: on an AppArmor host (the VM leg) the default profile denies every mount,
    # which would hide what the user namespace itself allows and refuses
    sc = api_pb2.LinuxContainerSecurityContext(
        capabilities=caps, namespace_options=env.pod_config.linux.security_context
        .namespace_options,
        apparmor=api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Unconfined))
    out = env.output(["sh", "-c",
                      ("mknod /tmp/disk b 253 0 2>/dev/null && echo mknod-ok || echo no-mknod; "
                      "mount -o remount,rw /proc/sys 2>/dev/null && echo rw || echo no-remount; "
                      "umount /proc/kcore 2>/dev/null && echo unmasked || echo no-umount; "
                      "echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo dropped "
                      "|| echo no-sysctl; "
                      "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo own-tmpfs; "
                      "hostname pod-own && hostname")],
                     linux=api_pb2.LinuxContainerConfig(security_context=sc))
    assert out.split() == ["no-mknod", "no-remount", "no-umount", "no-sysctl", "own-tmpfs",
                           "pod-own"]


def test_seccomp_no_new_privs_and_groups_inside(env: UsernsEnv) -> None:
    sc = api_pb2.LinuxContainerSecurityContext(
        seccomp=api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault),
        no_new_privs=True, run_as_user=api_pb2.Int64Value(value=33),
        supplemental_groups=[5000], namespace_options=env.pod_config.linux.security_context
        .namespace_options)
    out = env.output(["sh", "-c", ("grep -E '^(Seccomp|NoNewPrivs|Groups):' /proc/self/status; "
                      "id -u")], linux=api_pb2.LinuxContainerConfig(security_context=sc))
    fields = proc_status(out)
    assert fields["Seccomp"] == "2" and fields["NoNewPrivs"] == "1"
    assert "5000" in fields["Groups"].split()
    assert out.splitlines()[-1] == "33"


def test_privileged_container_refused(env: UsernsEnv) -> None:
    cfg = env.config(["true"])
    cfg.linux.security_context.privileged = True
    with pytest.raises(grpc.RpcError) as err:
        env.create(cfg)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_container_must_share_the_pods_user_namespace(env: UsernsEnv) -> None:
    for mode in (api_pb2.CONTAINER, api_pb2.TARGET, api_pb2.NODE):
        cfg = env.config(["true"])
        cfg.linux.security_context.namespace_options.userns_options.Clear()
        cfg.linux.security_context.namespace_options.userns_options.mode = mode
        with pytest.raises(grpc.RpcError) as err:
            env.create(cfg)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, mode


# -- refused pods ----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["two ranges", "0 unmapped", "zero length", "overflow",
                                  "CONTAINER", "TARGET", "privileged", "host network"])
def test_bad_user_namespace_pods_refused_leave_nothing(daemon, case: str) -> None:  # type: ignore[no-untyped-def]
    cfg = userns_pod_config(HOST_A)
    u = cfg.linux.security_context.namespace_options.userns_options
    if case == "two ranges":
        u.uids[0].length = 1000
        u.uids.add(container_id=1000, host_id=HOST_A + 5000, length=10)
    elif case == "0 unmapped":
        u.gids[0].container_id = 1
    elif case == "zero length":
        u.uids[0].length = 0
    elif case == "overflow":
        u.uids[0].host_id = 4294967295 - 100
    elif case in ("CONTAINER", "TARGET"):
        u.Clear()
        u.mode = getattr(api_pb2, case)
    elif case == "privileged":
        cfg.linux.security_context.privileged = True
    else:
        cfg.linux.security_context.namespace_options.network = api_pb2.NODE
    before = pods.leftovers(daemon)
    with pytest.raises(grpc.RpcError) as err:
        pods.run_pod(daemon.c, cfg)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert not [p for p in pods.list_pods(daemon.c) if p.metadata.name == cfg.metadata.name]
    assert pods.leftovers(daemon) == before


def test_failed_userns_pod_start_leaves_nothing(daemon) -> None:  # type: ignore[no-untyped-def]
    """The shim made and pinned the user namespace, then the pause-holder fails (a sysctl the
    kernel does not have): everything, the pinned user and network namespaces included, goes."""
    cfg = userns_pod_config(HOST_B, sysctls={"net.ipv4.pycri_no_such_sysctl": "1"})
    before = pods.leftovers(daemon)
    with pytest.raises(grpc.RpcError) as err:
        pods.run_pod(daemon.c, cfg)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "pycri_no_such_sysctl" in (err.value.details() or "")
    assert not [p for p in pods.list_pods(daemon.c) if p.metadata.name == cfg.metadata.name]
    assert pods.leftovers(daemon) == before


# -- daemon crash --------------------------------------------------------------------------------

def test_kill9_restart_keeps_userns_pods_ready_and_execable(fresh_daemon) -> None:  # type: ignore[no-untyped-def]
    d = fresh_daemon.start()
    e = UsernsEnv(d.c, pod_config=userns_pod_config(HOST_B, hostname="uns-r"))
    with e:
        cid = _sleeper(e)
        before = pods.info(d.c, e.pod_id)
        d.restart(crash=True)
        e.cri = d.c
        st = pods.status(d.c, e.pod_id).status
        assert st.state == api_pb2.SANDBOX_READY
        assert st.linux.namespaces.options.userns_options.mode == api_pb2.POD
        assert pods.info(d.c, e.pod_id)["pid"] == before["pid"]
        out = e.exec_sync(cid, ["sh", "-c", "id -u; cat /proc/self/uid_map"])
        assert out.exit_code == 0, out.stderr
        assert out.stdout.decode().split() == ["0", "0", str(HOST_B), str(LENGTH)]
        # a new container after the restart joins the same pinned user namespace
        assert e.output(["cat", "/proc/self/gid_map"]).split() == ["0", str(HOST_B),
                                                                  str(LENGTH)]
    # (the cgroup parent is shared with the session daemon, whose module pod still runs)
    assert {k: v for k, v in pods.leftovers(d).items() if k != "cgroups"} == {}


@pytest.fixture
def net_daemon() -> Iterator[tuple[PycriDaemon, FakeNet]]:
    """A daemon of its own on the recovery tests' network (host-local with a private data
    dir: "no IP left" is exact); not started."""
    base = PycriDaemon(config={})
    net = FakeNet(base.base, with_fake=False)
    d = PycriDaemon(base=base.base, config={"cni": {"conf_dir": str(base.cni_conf_dir)}})
    (d.cni_conf_dir / "10-fake.conflist").write_text(json.dumps(net.conflist))
    try:
        yield d, net
    finally:
        _teardown(d)


@pytest.mark.parametrize("point", ["runp_shim", "runp_network", "runp_ready"])
def test_crash_during_userns_run_pod_sandbox(net_daemon: tuple[PycriDaemon, FakeNet],
                                             point: str) -> None:
    """The daemon dies after the shim made (and pinned) the pod's user and network namespaces:
    the next start rolls the half-made pod back (or keeps the finished one) and leaves
    nothing of it."""
    d, net = net_daemon
    d.start(extra_env={"PYCRI_CRASH_AT": point})
    cfg = userns_pod_config(HOST_B)
    with pytest.raises(grpc.RpcError) as err:
        pods.run_pod(d.c, cfg)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    d.kill9()
    d.start()
    remaining = pods.list_pods(d.c)
    if point == "runp_ready":
        assert [p.state for p in remaining] == [api_pb2.SANDBOX_READY]
        st = pods.status(d.c, remaining[0].id).status
        assert st.linux.namespaces.options.userns_options.mode == api_pb2.POD
        pods.remove(d.c, remaining[0].id)
    else:
        assert remaining == []
    # (the cgroup parent is shared with the session daemon, whose module pod may still run)
    assert {k: v for k, v in pods.leftovers(d).items() if k != "cgroups"} == {}
    assert pods.wait_until(lambda: pods.shim_pids_of(d.base) == [], timeout=10)
    assert net.ips() == []

