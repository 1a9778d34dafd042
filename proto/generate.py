"""Regenerates the stubs of the CRI (api.proto) and of NRI (nri_api.proto, ttrpc.proto).

api_pb2.py / api_pb2_grpc.py come from api.proto; nri_api_pb2.py and ttrpc_pb2.py carry
messages only, since NRI's services run over ttrpc (nri/), not gRPC.

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


GRPC_PROTOS = ("api.proto",)
MESSAGE_PROTOS = ("nri_api.proto", "ttrpc.proto")
# Every generated file, relative to the repository root.
GENERATED = ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py",
             "nri_api_pb2.py", "nri_api_pb2.pyi", "ttrpc_pb2.py", "ttrpc_pb2.pyi")


def _protoc(args: list[str]) -> None:
    from grpc_tools import protoc

    rc = protoc.main(["grpc_tools.protoc", *args])
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")


def generate(out_dir: Path) -> None:
    """Writes the proto/*_pb2* stubs under out_dir."""
    import grpc_tools

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = [f"-I{REPO_ROOT}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    _protoc([*common, f"--grpc_python_out={out_dir}", *(str(PROTO_DIR / p) for p in GRPC_PROTOS)])
    _protoc([*common, *(str(PROTO_DIR / p) for p in MESSAGE_PROTOS)])
    _drop_none_enum_value(out_dir / "proto" / "nri_api_pb2.pyi")


def _drop_none_enum_value(pyi: Path) -> None:
    """NRI's enum Field has a value named None, which protoc writes into the .pyi as
    `None: Field`, a syntax error for type checkers. The lines are dropped (Field.None is
    reachable only as Field.Value("None") in Python anyway)."""
    lines = pyi.read_text().splitlines(keepends=True)
    pyi.write_text("".join(ln for ln in lines
                           if ln.strip() not in ("None: _ClassVar[Field]", "None: Field")))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT)
