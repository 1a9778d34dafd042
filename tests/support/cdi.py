"""A test CDI vendor: a tmp dir with device nodes made by mknod (/dev/null- and /dev/zero-like),
a dir to mount, hook output files, and a spec of two devices writing into a spec directory."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

FUSE = (10, 229)        # not in the default allow-list: only a CDI rule lets it be opened
LOOP_CONTROL = (10, 237)  # not allowed at all: the container may mknod it but not open it


class Vendor:
    """A tmp dir with the test's device nodes, a shared dir to mount and hook output files."""

    def __init__(self, spec_dir: Path) -> None:
        self.spec_dir = spec_dir
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="pycri-cdi-"))
        os.chmod(self.dir, 0o755)
        for name, src in (("null", "/dev/null"), ("zero", "/dev/zero")):
            rdev = os.stat(src).st_rdev
            os.mknod(self.dir / name, stat.S_IFCHR | 0o666, rdev)
        (self.dir / "share").mkdir()
        (self.dir / "share" / "file").write_text("from the vendor\n")
        self.out = self.dir / "hooks"
        self.out.mkdir()
        self.files: list[Path] = []

    def hook(self, name: str, script: str, **kw: Any) -> dict[str, Any]:
        return {"hookName": name, "path": "/bin/sh", "args": ["sh", "-c", script],
                "env": [f"OUT={self.out}", "PATH=/usr/bin:/bin"], **kw}

    def spec(self) -> dict[str, Any]:
        record = 'cat > "$OUT/{0}.json"; readlink /proc/self/ns/net > "$OUT/{0}.netns"'
        return {
            "cdiVersion": "0.7.0", "kind": "vendor.test/gpu",
            "containerEdits": {
                "env": ["CDI_SPEC=spec-level"],
                "hooks": [self.hook(k, record.format(k))
                          for k in ("createRuntime", "createContainer", "poststart",
                                    "poststop")]
                + [{"hookName": "startContainer", "path": "/bin/sh",
                    "args": ["sh", "-c", "cat > /hook-start.json"]}],
            },
            "devices": [
                {"name": "a", "containerEdits": {
                    "env": ["CDI_A=1"],
                    "deviceNodes": [
                        {"path": "/dev/cdi-null", "hostPath": str(self.dir / "null")},
                        {"path": "/dev/cdi-fuse", "type": "c", "major": FUSE[0],
                         "minor": FUSE[1], "permissions": "rw", "fileMode": 0o666}],
                    "mounts": [{"hostPath": str(self.dir / "share"), "containerPath": "/cdi-mnt",
                                "options": ["ro", "nosuid", "nodev", "bind"]}]}},
                {"name": "b", "containerEdits": {
                    "env": ["CDI_B=2"],
                    "deviceNodes": [{"path": "/dev/cdi-zero", "hostPath": str(self.dir / "zero"),
                                     "permissions": "rw"}],
                    "additionalGids": [4242]}},
            ],
        }

    def write(self, name: str, doc: dict[str, Any] | str) -> Path:
        path = self.spec_dir / name
        if isinstance(doc, str):
            text = doc
        elif name.endswith(".json"):
            text = json.dumps(doc)
        else:
            text = yaml.safe_dump(doc)
        tmp = path.with_name("." + path.name + ".tmp")
        tmp.write_text(text)
        os.rename(tmp, path)
        self.files.append(path)
        return path

    def close(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
