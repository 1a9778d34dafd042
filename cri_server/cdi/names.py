"""CDI device names: ``vendor.com/class=name`` and the ``cdi.k8s.io/<key>`` annotations.

The rules are the CDI spec's: a vendor and a class start with a letter, end with a letter or a
digit and hold letters, digits, '-', '_' and '.' between; a device name starts and ends with a
letter or digit and may also hold ':' between. An annotation value is a comma-separated list of
qualified names. Pure: no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pycri_common.errors import InvalidArgument
from pycri_common.text import shorten

ANNOTATION_PREFIX = "cdi.k8s.io/"
MAX_NAME = 253 + 1 + 63 + 1 + 253  # vendor (DNS) / class = name: bounds what we echo and keep
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class QualifiedName:
    vendor: str
    cls: str
    name: str

    @property
    def kind(self) -> str:
        return f"{self.vendor}/{self.cls}"

    def __str__(self) -> str:
        return f"{self.vendor}/{self.cls}={self.name}"


def vendor_or_class_error(value: str, what: str) -> str | None:
    """Why `value` is not a valid vendor or class name, or None."""
    if not value:
        return f"empty {what}"
    if value[0] not in _LETTERS:
        return f"{what} {shorten(value)} must start with a letter"
    if len(value) > 1:
        if value[-1] not in _ALNUM:
            return f"{what} {shorten(value)} must end with a letter or digit"
        for c in value[1:-1]:
            if c not in _ALNUM and c not in "-_.":
                return f"{what} {shorten(value)} holds the invalid character {c!r}"
    return None


def device_name_error(value: str) -> str | None:
    """Why `value` is not a valid device name (the part after '='), or None."""
    if not value:
        return "empty device name"
    if value[0] not in _ALNUM:
        return f"device name {shorten(value)} must start with a letter or digit"
    if len(value) > 1:
        if value[-1] not in _ALNUM:
            return f"device name {shorten(value)} must end with a letter or digit"
        for c in value[1:-1]:
            if c not in _ALNUM and c not in "-_.:":
                return f"device name {shorten(value)} holds the invalid character {c!r}"
    return None


def split_kind(kind: str) -> tuple[str, str] | None:
    """'vendor.com/class' -> (vendor, class); None unless there is exactly one '/'."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not vendor or not cls or "/" in cls:
        return None
    return vendor, cls


def parse_qualified(device: str) -> QualifiedName:
    """A fully qualified device name; InvalidArgument saying what is wrong with it."""
    if not isinstance(device, str) or len(device) > MAX_NAME:
        raise InvalidArgument(f"CDI device name {shorten(str(device))} is too long")
    qualifier, sep, name = device.partition("=")
    kind = split_kind(qualifier) if sep else None
    if kind is None or not name:
        raise InvalidArgument(f"CDI device name {shorten(device)} is not fully qualified "
                              "(want vendor.com/class=name)")
    err = (vendor_or_class_error(kind[0], "vendor") or vendor_or_class_error(kind[1], "class")
           or device_name_error(name))
    if err:
        raise InvalidArgument(f"CDI device name {shorten(device)}: {err}")
    return QualifiedName(kind[0], kind[1], name)


def requested_devices(cdi_devices: list[str], annotations: Mapping[str, str]) -> list[str]:
    """The device names a container asks for: ContainerConfig.CDI_devices in order, then the
    names in `cdi.k8s.io/<key>` annotations (keys in sorted order, values comma-separated),
    each once. Every name is checked (InvalidArgument names the offending one and where)."""
    out: list[str] = []
    seen: set[str] = set()

    def add(name: str, where: str) -> None:
        try:
            parse_qualified(name)
        except InvalidArgument as e:
            raise InvalidArgument(f"{where}: {e}") from None
        if name not in seen:
            seen.add(name)
            out.append(name)

    for i, name in enumerate(cdi_devices):
        add(name, f"CDI_devices[{i}]")
    for key in sorted(k for k in annotations if k.startswith(ANNOTATION_PREFIX)):
        for name in annotations[key].split(","):
            add(name.strip(), f"annotation {shorten(key)}")
    return out
