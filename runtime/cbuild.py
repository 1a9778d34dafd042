"""Building pycri's own small C programs (the keeper, the exec helper) with the host's C
compiler: once per source and flags, into a `build/` directory beside the source, named
<program>-<hash of source and flags>, written to a temporary name and renamed (a concurrent
build, or a kill -9 mid-build, never leaves a half-written program under the final name)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence


class BuildFailed(RuntimeError):
    pass


def built_path(source: str, cflags: Sequence[str], name: str) -> str:
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read() + " ".join(cflags).encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(source), "build", f"{name}-{digest}")


def prebuilt_or_build(env_var: str, source: str, cflags: Sequence[str], name: str) -> str:
    """The program named by $`env_var` (a prebuilt one: a read-only install), else our build
    of `source` (built now when missing). BuildFailed when neither is there."""
    path = os.environ.get(env_var, "")
    if path:
        if not os.access(path, os.X_OK):
            raise BuildFailed(f"{env_var}={path} is not an executable file")
        return path
    try:
        return build(source, cflags, name, f"set {env_var} to a built {name}")
    except OSError as e:
        raise BuildFailed(f"cannot build {name} from {source}: {e}") from None


def build(source: str, cflags: Sequence[str], name: str, how_else: str) -> str:
    """Compile `source` (if that build is not there yet); returns the program's path.
    BuildFailed names what is missing; how_else says how to do without this build."""
    target = built_path(source, cflags, name)
    if os.access(target, os.X_OK):
        return target
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise BuildFailed(f"no C compiler to build {source} (install gcc and libc6-dev, "
                          f"or run scripts/setup.sh, or {how_else})")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{name}")
    os.close(fd)
    try:
        done = subprocess.run([cc, *cflags, "-o", tmp, source], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise BuildFailed(f"building {source} failed: {done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
