"""The OCI hooks runner (runtime.hooks): state on stdin, exact env, args, timeout, failures."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pycri_common.errors import FailedPrecondition, InvalidArgument
from runtime import hooks

STATE = hooks.state("c1", "creating", 42, "/b", {"k": "v"})


def sh(script: str, **kw: object) -> dict[str, object]:
    return {"path": "/bin/sh", "args": ["sh", "-c", script], "env": [], "timeout": None, **kw}


def test_state_on_stdin_env_and_args(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = f'cat > {out}.json; echo "$0|$1|$ONLY|${{PYTEST_CURRENT_TEST:-nopath}}" > {out}.txt'
    hook = sh(script, env=["ONLY=1"])
    hook["args"] = ["sh", "-c", hook["args"][2], "argv0", "argv1"]  # type: ignore[index]
    hooks.run_hook(hook, STATE, "createRuntime", 0)
    assert json.loads((tmp_path / "out.json").read_text()) == {
        "ociVersion": hooks.OCI_VERSION, "id": "c1", "status": "creating", "pid": 42,
        "bundle": "/b", "annotations": {"k": "v"}}
    assert (tmp_path / "out.txt").read_text() == "argv0|argv1|1|nopath\n"


def test_failure_names_the_hook_and_keeps_stderr() -> None:
    with pytest.raises(FailedPrecondition, match=r"poststop hook 2 \(/bin/sh\): exited with 7: "
                                                  "broken"):
        hooks.run_hook(sh("echo broken >&2; exit 7"), STATE, "poststop", 2)
    with pytest.raises(FailedPrecondition, match="killed by signal 9"):
        hooks.run_hook(sh("kill -9 $$"), STATE, "poststop", 0)
    with pytest.raises(FailedPrecondition, match="cannot run"):
        hooks.run_hook({"path": "/no/such/hook", "args": [], "env": []}, STATE, "poststop", 0)


def test_timeout_kills_the_hook_and_its_children() -> None:
    t0 = time.monotonic()
    with pytest.raises(FailedPrecondition, match="did not finish within 1s"):
        hooks.run_hook(sh("sleep 30 & sleep 30", timeout=1), STATE, "createContainer", 0)
    assert time.monotonic() - t0 < 5


def test_a_hook_without_timeout_is_bounded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """No timeout is not for ever: the hook runs inside a CRI call and would hold its worker."""
    monkeypatch.setattr(hooks, "UNSET_TIMEOUT", 1)
    t0 = time.monotonic()
    with pytest.raises(FailedPrecondition, match="did not finish within 1s"):
        hooks.run_hook(sh("sleep 30"), STATE, "poststart", 0)
    assert time.monotonic() - t0 < 5


def test_hook_that_ignores_stdin_and_floods_stderr() -> None:
    big = hooks.state("c1", "creating", 1, "/b", {"k": "v" * 500_000})
    with pytest.raises(FailedPrecondition) as exc:
        hooks.run_hook(sh("head -c 1000000 /dev/zero | tr '\\0' x >&2; exit 1"), big,
                       "createRuntime", 0)
    assert len(str(exc.value)) < hooks.MAX_OUTPUT + 200


def test_run_hooks_stops_at_the_first_failure_run_logged_runs_all(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    lst = {"poststop": [sh("exit 1"), sh(f"touch {mark}")]}
    with pytest.raises(FailedPrecondition):
        hooks.run_hooks(lst, "poststop", STATE)
    assert not mark.exists()
    assert len(hooks.run_hooks_logged(lst, "poststop", STATE)) == 1
    assert mark.exists()


@pytest.mark.parametrize(("value", "match"), [
    ([], "must be an object"),
    ({"prestart": []}, "unknown hook kind"),
    ({"poststop": [{"path": "rel"}]}, "absolute"),
    ({"poststop": [{"path": "/x", "timeout": 0}]}, "timeout"),
    ({"poststop": [{"path": "/x", "env": ["NOEQ"]}]}, "NAME=VALUE"),
    ({"poststop": [{"path": "/x", "args": [1]}]}, "args"),
])
def test_validate_hooks(value: object, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        hooks.validate_hooks(value)


def test_validate_hooks_fills_args() -> None:
    assert hooks.validate_hooks({"poststart": [{"path": "/x"}]}) == {
        "poststart": [{"path": "/x", "args": ["/x"], "env": [], "timeout": None}]}
