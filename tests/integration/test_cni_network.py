"""CniManager with Debian's real CNI plugins, in network namespaces these tests create.

Each test uses its own bridge (pycri-t<N>), subnet (10.250.<N>.0/24) and host-local data dir,
talks only to its own namespaces (and the host end of its own bridge), and removes everything
it created: namespaces, bridge, veths, IP allocations, iptables rules (compared with
iptables-save before/after), and restores ip_forward.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cni import CniManager, CniPluginError, CniTeardownError
from cni.manager import POD_IFNAME

BIN_DIRS = ["/opt/cni/bin", "/usr/lib/cni"]
META = {"name": "web", "namespace": "cni-test", "uid": "0000-uid"}
_counter = itertools.count()
HOSTPORT_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK")
SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/lib/cni/bridge") and not os.path.exists("/opt/cni/bin/bridge"),
    reason="containernetworking-plugins not installed",
)


def run(*cmd: str, check: bool = True) -> str:
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


def rules() -> set[str]:
    """Every iptables/ip6tables rule and user chain (counters stripped)."""
    out = set()
    for tool in ("iptables-save", "ip6tables-save"):
        table = ""
        for line in run(tool, check=False).splitlines():
            if line.startswith("*"):
                table = line
            elif line.startswith("-A") or (line.startswith(":") and "[" in line
                                           and " - [" in line):
                out.add(f"{tool} {table} {line.split(' [')[0]}")
    return out


def in_netns(netns: str, *cmd: str, check: bool = True) -> str:
    return run("nsenter", f"--net={netns}", *cmd, check=check)


@dataclass
class Net:
    n: int
    tmp: Path
    subnet: str
    bridge: str
    name: str
    ipam_dir: Path
    conf_dir: Path
    bin_dir: Path
    netns_files: list[str] = field(default_factory=list)
    managers: list[CniManager] = field(default_factory=list)

    def manager(self, **kw: object) -> CniManager:
        kw.setdefault("default_subnet", self.subnet)
        m = CniManager(conf_dir=str(self.conf_dir), bin_dirs=[str(self.bin_dir), *BIN_DIRS],
                       cache_dir=str(self.tmp / "cache"), default_bridge=self.bridge,
                       default_network_name=self.name, ipam_data_dir=str(self.ipam_dir),
                       plugin_timeout=20, **kw)  # type: ignore[arg-type]
        self.managers.append(m)
        return m

    def owns(self, rule: str) -> bool:
        return f"10.250.{self.n}." in rule or f'name: \\"{self.name}\\"' in rule

    def netns(self) -> str:
        path = str(self.tmp / f"netns{len(self.netns_files)}")
        Path(path).touch()
        self.netns_files.append(path)
        run("unshare", f"--net={path}", "true")
        return path

    def drop_netns(self, path: str) -> None:
        run("umount", path, check=False)
        Path(path).unlink(missing_ok=True)

    def allocated(self) -> set[str]:
        d = self.ipam_dir / self.name
        return {p.name for p in d.iterdir() if p.name[0].isdigit()} if d.exists() else set()

    def conflist(self, plugins: list[dict], name: str | None = None) -> None:
        doc = {"cniVersion": "1.0.0", "name": name or self.name, "plugins": plugins}
        (self.conf_dir / "10-test.conflist").write_text(json.dumps(doc))

    def bridge_plugin(self, ip_masq: bool = True) -> dict:
        return {"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": ip_masq,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": self.subnet}]],
                         "dataDir": str(self.ipam_dir)}}

    def fake_plugin(self, name: str, fail_on: str, passthrough: bool = True) -> None:
        """A plugin failing on one command; on ADD it passes prevResult through."""
        script = f"""#!{sys.executable} -S
import json, os, sys
conf = json.load(sys.stdin)
cmd = os.environ["CNI_COMMAND"]
if cmd == {fail_on!r}:
    print(json.dumps({{"cniVersion": "1.0.0", "code": 101, "msg": "injected {name} failure",
                      "details": "test"}}))
    sys.exit(1)
if cmd == "ADD":
    print(json.dumps(conf.get("prevResult") or {{"cniVersion": "1.0.0"}}))
"""
        path = self.bin_dir / name
        path.write_text(script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = 100 + (os.getpid() * 7 + next(_counter)) % 150
    before = rules()
    sysctls = {p: _read(p) for p in SYSCTLS}
    (tmp_path / "conf").mkdir()
    (tmp_path / "bin").mkdir()
    ctx = Net(n=n, tmp=tmp_path, subnet=f"10.250.{n}.0/24", bridge=f"pycri-t{n}",
              name=f"pycri-t{n}", ipam_dir=tmp_path / "ipam", conf_dir=tmp_path / "conf",
              bin_dir=tmp_path / "bin")
    try:
        yield ctx
    finally:
        for m in ctx.managers[-1:]:  # anything a failed test left cached
            for pod in m.cached_pod_ids():
                m.teardown(pod, None, force=True)
        for path in ctx.netns_files:
            ctx.drop_netns(path)
        run("ip", "link", "del", ctx.bridge, check=False)
        _remove_hostport_plumbing_if_ours(before)
        for path, value in sysctls.items():
            if value and _read(path) != value:
                Path(path).write_text(value)
        # only rules of this test's network count: other pycri tests may run at the same time
        left = {r for r in rules() - before if ctx.owns(r)}
        assert not left, f"test left iptables rules: {sorted(left)}"
        assert ctx.bridge not in run("ip", "-o", "link", "show")


def _remove_hostport_plumbing_if_ours(before: set[str]) -> None:
    """portmap never deletes its top-level chains; remove them if they are new and unused."""
    for tool in ("iptables", "ip6tables"):
        now = rules()
        new = {r for r in now - before if r.startswith(f"{tool}-save ")}
        if not new or any("CNI-DN-" in r for r in now if r.startswith(f"{tool}-save ")):
            continue
        for chain_jump in (["PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
                            "CNI-HOSTPORT-DNAT"],
                           ["OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j",
                            "CNI-HOSTPORT-DNAT"],
                           ["POSTROUTING", "-m", "comment", "--comment",
                            "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"]):
            if any(chain_jump[-1] in r and f"-A {chain_jump[0]} " in r for r in new):
                run(tool, "-t", "nat", "-D", *chain_jump, check=False)
        for chain in HOSTPORT_CHAINS:
            if any(f":{chain} " in r for r in new):
                run(tool, "-t", "nat", "-F", chain, check=False)
                run(tool, "-t", "nat", "-X", chain, check=False)


class Listener:
    """A TCP server inside a netns answering each connection with a greeting."""

    def __init__(self, netns: str, port: int, greeting: str, family: str = "4") -> None:
        host = "::" if family == "6" else "0.0.0.0"
        fam = "socket.AF_INET6" if family == "6" else "socket.AF_INET"
        code = (
            "import socket,sys\n"
            f"s=socket.socket({fam});s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(({host!r},{port}));s.listen(8);print('ready',flush=True)\n"
            "while True:\n"
            f"    c,_=s.accept();c.sendall({greeting.encode()!r});c.close()\n"
        )
        self.proc = subprocess.Popen(["nsenter", f"--net={netns}", sys.executable, "-c", code],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def fetch(host: str, port: int, timeout: float = 5.0) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        data = b""
        while chunk := s.recv(100):
            data += chunk
        return data


def fetch_from_netns(netns: str, host: str, port: int) -> str:
    code = (f"import socket;s=socket.create_connection(({host!r},{port}),timeout=5);"
            "print(s.recv(100).decode())")
    return in_netns(netns, sys.executable, "-c", code).strip()


def veth_of(result) -> str:  # type: ignore[no-untyped-def]
    host_side = [i["name"] for i in result.interfaces if not i.get("sandbox")
                 and i["name"].startswith("veth")]
    assert len(host_side) == 1, result.interfaces
    return host_side[0]


def test_default_network_setup_reach_hostport_and_clean_teardown(net: Net):
    m = net.manager()
    assert m.status().ready
    ns = net.netns()
    host_port = 20000 + net.n
    t0 = time.monotonic()
    result = m.setup("pod-a", ns, META, [{"container_port": 8080, "host_port": host_port,
                                          "protocol": "TCP"}])
    add_ms = (time.monotonic() - t0) * 1000
    ip = result.primary_ip
    assert ip is not None and ip.startswith(f"10.250.{net.n}.")
    assert result.gateway == f"10.250.{net.n}.1"
    assert net.allocated() == {ip}
    # eth0 with the IP inside the netns, lo up
    assert f"inet {ip}/24" in in_netns(ns, "ip", "-o", "addr", "show", "dev", "eth0")
    assert "UP" in in_netns(ns, "ip", "-o", "link", "show", "lo")
    veth = veth_of(result)
    assert veth in run("ip", "-o", "link", "show", "master", net.bridge)
    assert any(f"{ip}" in r and "pod-a" in r for r in rules())
    # host -> pod over the bridge, and hostPort via the portmap DNAT (bridge address and lo)
    listener = Listener(ns, 8080, "hello-a")
    try:
        assert fetch(ip, 8080) == b"hello-a"
        assert fetch(f"10.250.{net.n}.1", host_port) == b"hello-a"
        assert fetch("127.0.0.1", host_port) == b"hello-a"
    finally:
        listener.stop()
    t0 = time.monotonic()
    assert m.teardown("pod-a", ns, META) == []
    del_ms = (time.monotonic() - t0) * 1000
    print(f"default conflist ADD {add_ms:.0f} ms, DEL {del_ms:.0f} ms")
    assert "eth0" not in in_netns(ns, "ip", "-o", "link", "show")
    assert veth not in run("ip", "-o", "link", "show")
    assert net.allocated() == set()
    assert not any("pod-a" in r or f"{ip}/" in r for r in rules())
    assert m.cached_pod_ids() == set()
    assert m.teardown("pod-a", ns, META) == []  # idempotent


def test_two_pods_reach_each_other(net: Net):
    m = net.manager()
    ns_a, ns_b = net.netns(), net.netns()
    ip_a = m.setup("pod-a", ns_a, META).primary_ip
    ip_b = m.setup("pod-b", ns_b, META).primary_ip
    assert ip_a and ip_b and ip_a != ip_b
    listener = Listener(ns_b, 9000, "hello-b")
    try:
        assert fetch_from_netns(ns_a, ip_b, 9000) == "hello-b"
    finally:
        listener.stop()
    m.teardown("pod-a", ns_a)
    m.teardown("pod-b", ns_b)
    assert net.allocated() == set()


def test_dual_stack_default(net: Net):
    m = net.manager(default_subnet_v6=f"fd00:250:{net.n}::/64")
    ns = net.netns()
    result = m.setup("pod-6", ns, META)
    assert len(result.ips) == 2
    v4, v6 = result.ips
    assert "." in v4 and v6.startswith(f"fd00:250:{net.n}:")
    assert v6 in in_netns(ns, "ip", "-o", "-6", "addr", "show", "dev", "eth0")
    m.teardown("pod-6", ns)
    assert net.allocated() == set()


def test_failing_plugin_on_add_rolls_back(net: Net):
    net.fake_plugin("failadd", fail_on="ADD")
    net.conflist([net.bridge_plugin(), {"type": "failadd"}])
    m = net.manager()
    ns = net.netns()
    with pytest.raises(CniPluginError) as info:
        m.setup("pod-f", ns, META)
    assert "CNI plugin 'failadd' failed on ADD" in str(info.value)
    assert "injected failadd failure" in str(info.value) and info.value.cni_code == 101
    assert "eth0" not in in_netns(ns, "ip", "-o", "link", "show")
    assert net.allocated() == set()
    assert not any("pod-f" in r for r in rules())
    assert m.cached_pod_ids() == set()


def test_failing_del_is_reported_and_bridge_still_cleaned(net: Net):
    net.fake_plugin("faildel", fail_on="DEL")
    net.conflist([net.bridge_plugin(), {"type": "faildel"}])
    m = net.manager()
    ns = net.netns()
    ip = m.setup("pod-d", ns, META).primary_ip
    assert net.allocated() == {ip}
    with pytest.raises(CniTeardownError, match="'faildel' failed on DEL"):
        m.teardown("pod-d", ns)
    assert net.allocated() == set()  # bridge DEL ran despite the failure before it
    assert "eth0" not in in_netns(ns, "ip", "-o", "link", "show")
    assert m.cached_pod_ids() == {"pod-d"}  # kept for a retry
    failures = m.teardown("pod-d", ns, force=True)
    assert [f.plugin for f in failures] == ["faildel"]
    assert m.cached_pod_ids() == set()


def test_cache_survives_restart_and_config_change(net: Net):
    m = net.manager()
    ns = net.netns()
    result = m.setup("pod-r", ns, META, [{"container_port": 80, "host_port": 21000 + net.n}])
    veth = veth_of(result)
    # "restart" with a different network configured: DEL must use the cached one
    net.conflist([{"type": "loopback"}], name="something-else")
    restarted = net.manager()
    assert restarted.cached_result("pod-r").ips == result.ips  # type: ignore[union-attr]
    restarted.teardown("pod-r", ns)
    assert net.allocated() == set()
    assert veth not in run("ip", "-o", "link", "show")
    assert not any("pod-r" in r for r in rules())


def test_teardown_with_netns_gone_releases_everything(net: Net):
    # bridge without ipMasq: Debian's bridge 1.1.1 can only find its masquerade rule through
    # the netns, so a netns removed before DEL would leave that rule (see cni docs).
    net.conflist([net.bridge_plugin(ip_masq=False),
                  {"type": "portmap", "capabilities": {"portMappings": True}}])
    m = net.manager()
    ns = net.netns()
    m.setup("pod-g", ns, META, [{"container_port": 80, "host_port": 22000 + net.n}])
    assert any("pod-g" in r for r in rules())
    net.drop_netns(ns)
    assert m.teardown("pod-g", ns) == []
    assert net.allocated() == set()
    assert not any("pod-g" in r for r in rules())


def test_check(net: Net):
    # bridge only: Debian's portmap 1.1.1 CHECK fails for IPv4-only pods (it checks IPv6
    # chains it never created); no ipMasq because flushing eth0 hides the rule from DEL.
    net.conflist([net.bridge_plugin(ip_masq=False)])
    m = net.manager()
    ns = net.netns()
    result = m.setup("pod-c", ns, META)
    m.check("pod-c", ns)
    in_netns(ns, "ip", "addr", "flush", "dev", "eth0")
    with pytest.raises(CniPluginError, match="'bridge' failed on CHECK"):
        m.check("pod-c", ns)
    m.teardown("pod-c", ns)
    assert result.primary_ip not in net.allocated()


def test_twenty_concurrent_setups_get_distinct_ips(net: Net):
    m = net.manager()
    pods = [(f"pod-{i:02d}", net.netns()) for i in range(20)]
    results: dict[str, object] = {}

    def attach(pod: str, ns: str) -> None:
        try:
            results[pod] = m.setup(pod, ns, META)
        except Exception as exc:  # noqa: BLE001 - asserted below
            results[pod] = exc

    threads = [threading.Thread(target=attach, args=p) for p in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errs = {p: r for p, r in results.items() if isinstance(r, Exception)}
    assert not errs
    ips = [results[p].primary_ip for p, _ in pods]  # type: ignore[attr-defined]
    assert len(set(ips)) == 20 and net.allocated() == set(ips)
    for (_pod, ns), ip in zip(pods, ips, strict=True):
        assert f"inet {ip}/" in in_netns(ns, "ip", "-o", "-4", "addr", "show", "dev",
                                         POD_IFNAME)
    threads = [threading.Thread(target=m.teardown, args=p) for p in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert net.allocated() == set() and m.cached_pod_ids() == set()
