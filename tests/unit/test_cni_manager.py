"""CniManager against fake plugins (scripts generated per test): protocol, chaining, cache,
failure handling. No root needed; the real plugins are exercised in
tests/integration/test_cni_network.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cni import CniManager, CniPluginError, CniPluginTimeout, CniTeardownError
from cni.cache import CacheEntry
from cni.errors import CniConfigError, CniPluginConfigError, CniPluginUnavailable
from pycri_common import errors

FAKE_PLUGIN = """#!{python} -S
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
me = os.path.basename(sys.argv[0])
cmd = os.environ.get("CNI_COMMAND", "")
raw = sys.stdin.read()
conf = json.loads(raw) if raw.strip() else {{}}
with open(os.path.join(here, "log.jsonl"), "a") as f:
    env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_")}}
    f.write(json.dumps({{"plugin": me, "command": cmd, "env": env, "stdin": conf}}) + "\\n")
try:
    with open(os.path.join(here, "control.json")) as f:
        ctl = json.load(f).get(me, {{}})
except FileNotFoundError:
    ctl = {{}}
if cmd in ctl.get("sleep", {{}}):
    time.sleep(ctl["sleep"][cmd])
if cmd in ctl.get("fail", []):
    print(json.dumps({{"cniVersion": "1.0.0", "code": ctl.get("code", 100),
                      "msg": ctl.get("msg", me + " refused"), "details": "fake details"}}))
    sys.exit(1)
if cmd in ctl.get("garbage", []):
    print("this is not json")
    sys.exit(0)
if cmd == "VERSION":
    print(json.dumps({{"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0"]}}))
elif cmd == "ADD" and not ctl.get("empty"):
    prev = conf.get("prevResult")
    if prev is None:
        ip = ctl.get("ip", "10.9.0.2/24")
        prev = {{"cniVersion": conf["cniVersion"],
                "interfaces": [{{"name": "br"}}, {{"name": os.environ["CNI_IFNAME"],
                               "sandbox": os.environ["CNI_NETNS"]}}],
                "ips": [{{"interface": 1, "address": ip, "gateway": "10.9.0.1"}}]}}
    print(json.dumps(prev))
"""


class FakeBin:
    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir()
        self.control: dict[str, dict] = {}

    def add(self, *names: str) -> None:
        for name in names:
            path = self.dir / name
            path.write_text(FAKE_PLUGIN.format(python=sys.executable))
            path.chmod(path.stat().st_mode | stat.S_IXUSR)

    def set(self, plugin: str, **ctl: object) -> None:
        self.control[plugin] = ctl
        (self.dir / "control.json").write_text(json.dumps(self.control))

    def calls(self) -> list[dict]:
        log = self.dir / "log.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def clear(self) -> None:
        (self.dir / "log.jsonl").unlink(missing_ok=True)


META = {"name": "web", "namespace": "prod", "uid": "uid-1"}
POD = "a" * 64


@pytest.fixture
def env(tmp_path: Path):
    fake = FakeBin(tmp_path)
    fake.add("loopback", "first", "second", "third")
    conf = tmp_path / "conf"
    conf.mkdir()
    netns = f"/proc/{os.getpid()}/ns/net"  # a real nsfs file; the fake plugins never enter it
    (conf / "10-test.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "testnet", "plugins": [
            {"type": "first", "k": 1},
            {"type": "second", "capabilities": {"portMappings": True}},
            {"type": "third", "capabilities": {"bandwidth": True}},
        ]}))

    def manager(**kw: Any) -> CniManager:
        return CniManager(conf_dir=str(conf), bin_dirs=[str(tmp_path / "nothing"),
                          str(fake.dir)], cache_dir=str(tmp_path / "cache"), **kw)

    return fake, manager, netns, conf


PORTS = [{"container_port": 80, "host_port": 8080, "protocol": "TCP"}]


def test_add_chains_plugins_in_order_with_env_and_injected_config(env):
    fake, manager, netns, _ = env
    result = manager().setup(POD, netns, META, PORTS)
    assert result.ips == ["10.9.0.2"] and result.gateway == "10.9.0.1"
    calls = fake.calls()
    assert [(c["plugin"], c["command"]) for c in calls] == [
        ("loopback", "ADD"), ("first", "ADD"), ("second", "ADD"), ("third", "ADD")]
    lo, first, second, third = calls
    assert lo["env"]["CNI_IFNAME"] == "lo"
    for c in (first, second, third):
        assert c["env"] == {
            "CNI_COMMAND": "ADD", "CNI_CONTAINERID": POD, "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0", "CNI_PATH": f"{env[1]().bin_dirs[0]}:{fake.dir}",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web;"
                        f"K8S_POD_INFRA_CONTAINER_ID={POD};K8S_POD_UID=uid-1"}
        assert c["stdin"]["name"] == "testnet" and c["stdin"]["cniVersion"] == "1.0.0"
    assert "prevResult" not in first["stdin"] and first["stdin"]["k"] == 1
    assert second["stdin"]["prevResult"]["ips"][0]["address"] == "10.9.0.2/24"
    assert second["stdin"]["runtimeConfig"] == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert "runtimeConfig" not in first["stdin"]
    assert "runtimeConfig" not in third["stdin"]  # no bandwidth asked for


def test_bandwidth_capability_reaches_only_declaring_plugin(env):
    fake, manager, netns, _ = env
    manager().setup(POD, netns, META, [], bandwidth={"ingressRate": 1000, "ingressBurst": 10})
    third = next(c for c in fake.calls() if c["plugin"] == "third")
    assert third["stdin"]["runtimeConfig"] == {"bandwidth": {"ingressRate": 1000,
                                                             "ingressBurst": 10}}


def test_del_reverse_order_with_cached_prev_result_and_capabilities(env):
    fake, manager, netns, _ = env
    m = manager()
    m.setup(POD, netns, META, PORTS)
    fake.clear()
    assert m.teardown(POD, netns) == []
    calls = fake.calls()
    assert [(c["plugin"], c["command"]) for c in calls] == [
        ("third", "DEL"), ("second", "DEL"), ("first", "DEL"), ("loopback", "DEL")]
    for c in calls[:3]:
        assert c["stdin"]["prevResult"]["ips"][0]["address"] == "10.9.0.2/24"
        assert c["env"]["CNI_NETNS"] == netns and c["env"]["CNI_IFNAME"] == "eth0"
    assert calls[1]["stdin"]["runtimeConfig"]["portMappings"][0]["hostPort"] == 8080
    assert m.cached_result(POD) is None and m.cached_pod_ids() == set()


def test_teardown_is_idempotent_and_uses_current_config_without_cache(env):
    fake, manager, netns, _ = env
    m = manager()
    m.teardown(POD, netns, META, PORTS)
    m.teardown(POD, None)
    dels = [c for c in fake.calls() if c["plugin"] != "loopback"]
    assert [c["plugin"] for c in dels] == ["third", "second", "first"] * 2
    assert all("prevResult" not in c["stdin"] for c in dels)
    assert dels[1]["stdin"]["runtimeConfig"]["portMappings"][0]["containerPort"] == 80
    assert dels[3]["env"]["CNI_NETNS"] == ""  # no netns given


def test_cache_survives_restart_and_conf_dir_change(env):
    fake, manager, netns, conf = env
    manager().setup(POD, netns, META, PORTS)
    (conf / "10-test.conflist").unlink()
    (conf / "00-other.conf").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "other", "type": "third"}))
    restarted = manager()
    cached = restarted.cached_result(POD)
    assert cached is not None and cached.ips == ["10.9.0.2"] and cached.network == "testnet"
    fake.clear()
    restarted.teardown(POD, "/run/pycri-test-no-such-netns")
    calls = fake.calls()
    assert [c["plugin"] for c in calls] == ["third", "second", "first"]  # no lo: netns gone
    assert {c["stdin"]["name"] for c in calls} == {"testnet"}
    assert {c["env"]["CNI_NETNS"] for c in calls} == {""}


def test_failed_add_deletes_what_was_added_and_names_the_plugin(env):
    fake, manager, netns, _ = env
    fake.set("second", fail=["ADD"], code=7, msg="bad portmap conf")
    m = manager()
    with pytest.raises(CniPluginConfigError) as info:
        m.setup(POD, netns, META, PORTS)
    exc = info.value
    assert isinstance(exc, errors.FailedPrecondition)
    assert exc.plugin == "second" and exc.cni_code == 7 and exc.details == "fake details"
    assert "CNI plugin 'second' failed on ADD for network 'testnet': bad portmap conf" in str(exc)
    calls = [(c["plugin"], c["command"]) for c in fake.calls()]
    assert calls == [("loopback", "ADD"), ("first", "ADD"), ("second", "ADD"),
                     ("second", "DEL"), ("first", "DEL")]
    last_del = fake.calls()[-1]
    assert last_del["stdin"]["prevResult"]["ips"][0]["address"] == "10.9.0.2/24"
    assert m.cached_pod_ids() == set()


def test_failed_add_whose_cleanup_fails_keeps_cache_for_teardown(env):
    fake, manager, netns, _ = env
    fake.set("second", fail=["ADD"], code=11, msg="busy")
    fake.set("first", fail=["DEL"], msg="cannot undo")
    m = manager()
    with pytest.raises(CniPluginUnavailable) as info:
        m.setup(POD, netns, META, PORTS)
    assert "cleanup DEL also failed" in str(info.value) and "cannot undo" in str(info.value)
    assert m.cached_pod_ids() == {POD}
    fake.set("first")
    fake.clear()
    m.teardown(POD, netns)  # the cached full list is DELeted (DEL tolerates the unadded)
    assert [c["plugin"] for c in fake.calls()] == ["third", "second", "first", "loopback"]
    assert m.cached_pod_ids() == set()


def test_failing_del_is_reported_all_plugins_still_run_and_retry_works(env):
    fake, manager, netns, _ = env
    m = manager()
    m.setup(POD, netns, META, PORTS)
    fake.set("second", fail=["DEL"], msg="iptables locked")
    fake.clear()
    with pytest.raises(CniTeardownError) as info:
        m.teardown(POD, netns)
    assert isinstance(info.value, errors.Unavailable)
    assert "'second' failed on DEL" in str(info.value) and "iptables locked" in str(info.value)
    assert [c["plugin"] for c in fake.calls()] == ["third", "second", "first", "loopback"]
    assert m.cached_pod_ids() == {POD}  # kept for the retry
    failures = m.teardown(POD, netns, force=True)
    assert [f.plugin for f in failures] == ["second"]
    assert m.cached_pod_ids() == set()


def test_del_tolerates_missing_plugin_and_container_unknown(env):
    fake, manager, netns, _ = env
    m = manager()
    m.setup(POD, netns, META, PORTS)
    (fake.dir / "third").unlink()
    fake.set("second", fail=["DEL"], code=3, msg="no such container")
    fake.clear()
    assert m.teardown(POD, netns) == []
    assert [c["plugin"] for c in fake.calls()] == ["second", "first", "loopback"]


def test_missing_plugin_on_add_is_config_error_before_any_side_effect(env):
    fake, manager, netns, _ = env
    (fake.dir / "third").unlink()
    m = manager()
    with pytest.raises(CniConfigError, match="CNI plugin 'third' not found in") as info:
        m.setup(POD, netns, META, PORTS)
    assert isinstance(info.value, errors.FailedPrecondition)
    assert fake.calls() == [] and m.cached_pod_ids() == set()
    st = m.status()
    assert not st.ready and st.reason == "NetworkPluginNotReady" and "'third'" in st.message


def test_plugin_timeout_kills_and_cleans_up(env):
    fake, manager, netns, _ = env
    fake.set("first", sleep={"ADD": 30})
    m = manager(plugin_timeout=0.5)
    with pytest.raises(CniPluginTimeout) as info:
        m.setup(POD, netns, META)
    assert isinstance(info.value, errors.DeadlineExceeded)
    assert "no answer within 0.5s" in str(info.value)
    assert [(c["plugin"], c["command"]) for c in fake.calls()][-1] == ("first", "DEL")


def test_garbage_and_empty_results_are_errors(env):
    fake, manager, netns, _ = env
    fake.set("third", garbage=["ADD"])
    with pytest.raises(CniPluginError, match=r"'third' failed on ADD.*invalid JSON"):
        manager().setup(POD, netns, META)
    fake.set("third", empty=True)
    with pytest.raises(CniPluginError, match="printed no result"):
        manager().setup(POD, netns, META)
    assert manager().cached_pod_ids() == set()


def test_check_uses_cached_result_and_reports_failure(env):
    fake, manager, netns, _ = env
    m = manager()
    with pytest.raises(errors.NotFound):
        m.check(POD, netns)
    m.setup(POD, netns, META)
    fake.clear()
    m.check(POD, netns)
    calls = fake.calls()
    assert [(c["plugin"], c["command"]) for c in calls] == [
        ("first", "CHECK"), ("second", "CHECK"), ("third", "CHECK")]
    assert all(c["stdin"]["prevResult"]["ips"] for c in calls)
    fake.set("second", fail=["CHECK"], msg="veth gone")
    with pytest.raises(CniPluginError, match="veth gone"):
        m.check(POD, netns)


def test_setup_input_validation(env):
    _, manager, netns, _ = env
    m = manager()
    with pytest.raises(errors.InvalidArgument):
        m.setup("bad/id", netns, META)
    with pytest.raises(errors.FailedPrecondition, match="does not exist"):
        m.setup(POD, "/run/pycri-test-no-such-netns", META)
    with pytest.raises(errors.FailedPrecondition, match="not a network namespace"):
        m.setup(POD, __file__, META)  # e.g. a pin file whose bind mount is gone
    with pytest.raises(errors.InvalidArgument):
        m.setup(POD, netns, {"name": "a;b"})
    with pytest.raises(errors.InvalidArgument):
        m.setup(POD, netns, META, [{"container_port": 80, "host_port": 99999}])


def test_status_ready_and_version_mismatch(env):
    _, manager, _, conf = env
    st = manager().status()
    assert st.ready and "testnet" in st.message
    (conf / "00-new.conflist").write_text(json.dumps(
        {"cniVersion": "0.3.1", "name": "old", "plugins": [{"type": "first"}]}))
    st = manager().status()
    assert not st.ready and "does not support cniVersion 0.3.1" in st.message


def test_status_without_config_and_default_disabled(env, tmp_path):
    _, manager, _, conf = env
    for f in conf.iterdir():
        f.unlink()
    st = manager(use_default_network=False).status()
    assert not st.ready and "no CNI network config found" in st.message
    st = CniManager(conf_dir=str(conf), bin_dirs=[str(tmp_path / "none")],
                    cache_dir=str(tmp_path / "c")).status()
    assert not st.ready and "'bridge'" in st.message and "not found" in st.message


def test_concurrent_setups_run_in_parallel_and_each_get_their_cache(env):
    _, manager, netns, _ = env
    m = manager()
    ids = [f"pod{i:02d}" for i in range(8)]
    errs: list[BaseException] = []

    def run(pid: str) -> None:
        try:
            m.setup(pid, netns, META)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errs.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errs == []
    assert m.cached_pod_ids() == set(ids)
    for pid in ids:
        m.teardown(pid, netns)
    assert m.cached_pod_ids() == set()


def test_repeated_setup_returns_cached_attachment_without_plugins(env):
    fake, manager, netns, _ = env
    first = manager().setup(POD, netns, META)
    fake.clear()
    again = manager().setup(POD, netns, META)
    assert again.ips == first.ips and fake.calls() == []


def test_unfinished_add_is_deleted_before_a_new_add(env, tmp_path):
    fake, manager, netns, _ = env
    fake.set("first", sleep={"ADD": 30})
    with pytest.raises(CniPluginTimeout):
        manager(plugin_timeout=0.3).setup(POD, netns, META)
    # simulate a crash mid-ADD: the pending entry (no result) is what a kill -9 leaves
    m = manager()
    m.cache.save(CacheEntry(POD, "testnet", "eth0", netns, json.loads(
        (tmp_path / "conf" / "10-test.conflist").read_text()), [], {}, None))
    fake.set("first")
    fake.clear()
    result = m.setup(POD, netns, META)
    assert result.ips == ["10.9.0.2"]
    assert [(c["plugin"], c["command"]) for c in fake.calls()] == [
        ("third", "DEL"), ("second", "DEL"), ("first", "DEL"),
        ("loopback", "ADD"), ("first", "ADD"), ("second", "ADD"), ("third", "ADD")]
    assert m.cached_result(POD) is not None


def test_teardown_without_netns_uses_cached_netns_if_still_a_namespace(env):
    fake, manager, netns, _ = env
    m = manager()
    m.setup(POD, netns, META)
    fake.clear()
    m.teardown(POD, None)
    assert {c["env"]["CNI_NETNS"] for c in fake.calls()} == {netns}


def test_plugin_timeout_returns_even_if_an_escaped_child_holds_stdout(tmp_path: Path) -> None:
    """A plugin whose child left its process group (setsid) and kept stdout open: the
    timeout must still end the call (the child is not ours to kill; the test kills it)."""
    import signal
    import time

    from cni.invoke import Invocation, run_plugin
    pidfile = tmp_path / "escaped.pid"
    plugin = tmp_path / "escaping"
    plugin.write_text(f"""#!{sys.executable}
import os, time
if os.fork() == 0:
    os.setsid()
    open({str(pidfile)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
    os._exit(0)
time.sleep(60)
""")
    plugin.chmod(0o755)
    started = time.monotonic()
    try:
        with pytest.raises(CniPluginTimeout):
            run_plugin(str(plugin), Invocation("ADD", "pod1", "/x", "eth0"), {}, "net",
                       timeout=0.5)
        assert time.monotonic() - started < 30
    finally:
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.1)
        if pidfile.exists() and pidfile.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
