"""The committed stubs are exactly what grpcio-tools generates from proto/*.proto."""
from __future__ import annotations

import re
from pathlib import Path

from cri_server.servicer_base import rpc_names
from proto import api_pb2, generate

REFERENCE = Path(__file__).resolve().parents[3] / "shared/reference/cri-api-v0.36.3/api.proto"


def test_committed_stubs_match_fresh_generation(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    for name in generate.GENERATED:
        fresh = (tmp_path / "proto" / name).read_text()
        committed = (generate.PROTO_DIR / name).read_text()
        assert fresh == committed, f"proto/{name} is stale: run `python -m proto.generate`"


def test_services_have_all_rpcs() -> None:
    assert len(rpc_names("RuntimeService")) == 35
    assert len(rpc_names("ImageService")) == 6
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"


def _shape(text: str) -> list[str]:
    """Declarations only: names, numbers and types, comments and blank lines dropped."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [re.sub(r"//.*", "", line).strip() for line in text.splitlines()]
    return [re.sub(r"\s+", " ", line) for line in lines if line]


def test_schema_matches_upstream_declarations() -> None:
    if not REFERENCE.exists():
        import pytest
        pytest.skip("upstream reference proto not present next to the checkout")
    ours = (generate.PROTO_DIR / "api.proto").read_text()
    assert _shape(ours) == _shape(REFERENCE.read_text())
