"""Error kinds sent by name (shim replies) rebuild as pycri_common.errors classes, each naming a gRPC code."""
from __future__ import annotations

import pytest

from pycri_common import errors

_CLASSES = [errors.PycriError, *errors.PycriError.__subclasses__()]


def test_unknown_kind_is_a_plain_pycri_error() -> None:
    for kind in ("", "KeyError", "from_kind", "Any"):
        assert type(errors.from_kind(kind, "m")) is errors.PycriError


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_every_class_names_a_grpc_status_code(cls: type[errors.PycriError]) -> None:
    import grpc

    assert grpc.StatusCode[cls.code_name].name == cls.code_name
