"""runtime.shim_python: the zygote and the pod shims run on the configured interpreter."""
from __future__ import annotations

import glob
import os
import sys

import pytest

from proto import api_pb2
from tests.support import pods
from tests.support.daemon import PycriDaemon, write_toml

OTHER_PYTHONS = sorted(p for p in glob.glob("/root/.pyenv/versions/3.1[2-9]*/bin/python3")
                       if os.path.realpath(p) != os.path.realpath(sys.executable))


@pytest.mark.skipif(not OTHER_PYTHONS, reason="no second CPython 3.12+ on this machine")
def test_shims_run_on_the_configured_interpreter(fresh_daemon: PycriDaemon) -> None:
    import tomllib
    cfg = tomllib.loads(fresh_daemon.config_file.read_text())
    cfg.setdefault("runtime", {})["shim_python"] = OTHER_PYTHONS[0]
    write_toml(fresh_daemon.config_file, cfg)
    d = fresh_daemon.start()
    pod_id = pods.run_pod(d.c)
    try:
        info = pods.info(d.c, pod_id)
        assert os.path.realpath(f"/proc/{info['shimPid']}/exe") == os.path.realpath(OTHER_PYTHONS[0])
        assert pods.status(d.c, pod_id).status.state == api_pb2.SANDBOX_READY
    finally:
        pods.stop_and_remove(d.c, pod_id)
