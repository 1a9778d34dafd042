"""Regenerates api_pb2.py / api_pb2_grpc.py from api.proto with grpcio-tools.

Run from anywhere: ``python -m proto.generate [OUTDIR]``. The stubs are
committed; tests/unit/test_proto_stubs.py checks they match a fresh run, which
is why grpcio-tools is pinned in pyproject.toml (its protoc stamps its version
into the output).
"""
from __future__ import annotations

import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent


def generate(out_dir: Path) -> None:
    """Writes proto/api_pb2.py and proto/api_pb2_grpc.py under out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--pyi_out={out_dir}",
        str(PROTO_DIR / "api.proto"),
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT)
