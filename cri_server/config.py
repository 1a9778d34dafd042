"""pycri configuration: defaults < /etc/pycri/pycri.toml < pycri.d/*.toml < flags.

Files are TOML, read with the standard library's tomllib. Each file is checked
on its own against the schema below, so an unknown key or a value of the wrong
type is reported with the key's full name and the file it came from. Drop-ins
are applied in file-name order; tables merge key by key, other values replace.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

DEFAULT_CONFIG_FILE = Path("/etc/pycri/pycri.toml")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
CGROUP_DRIVERS = ("cgroupfs", "systemd")


class ConfigError(ValueError):
    """A configuration file or flag is invalid; the message says where."""


@dataclass
class StreamingConfig:
    # host:port of the exec/attach/port-forward server; port 0 picks a free one.
    address: str = "127.0.0.1:0"
    # Seconds a streaming URL stays valid (each is single-use).
    token_ttl_seconds: float = 60.0


@dataclass
class CniConfig:
    # First *.conflist/*.conf/*.json here by name is the pod network.
    conf_dir: str = "/etc/cni/net.d"
    # Where plugin binaries are looked up, in order.
    bin_dirs: list[str] = field(default_factory=lambda: ["/opt/cni/bin", "/usr/lib/cni"])
    # Subnet of the built-in default network, used when conf_dir has no config.
    default_subnet: str = "10.88.0.0/16"
    # Linux bridge of the built-in default network.
    default_bridge: str = "pycri0"
    # Seconds one plugin invocation may take.
    plugin_timeout_seconds: float = 60.0


@dataclass
class RegistryConfig:
    # containerd-style hosts directory: <config_path>/<host>/hosts.toml (mirrors,
    # plain HTTP, CA). An absent directory means "no special configuration".
    config_path: str = "/etc/pycri/certs.d"
    # A pull that receives no bytes for this long is cancelled.
    stall_timeout_seconds: float = 60.0
    # Layers downloaded at once per pull.
    max_concurrent_downloads: int = 3
    # docker config.json consulted for credentials when the request has none.
    auth_file: str = "/root/.docker/config.json"


@dataclass
class ImagesConfig:
    # A layer's compressed blob is not kept once the layer is unpacked (CRI-O's way;
    # containerd keeps it unless its discard_unpacked_layers is set): half the disk and
    # writes per pulled image. false keeps every layer blob in content/blobs.
    discard_unpacked_layers: bool = True


@dataclass
class MetricsConfig:
    # host:port of the Prometheus endpoint; empty disables it.
    address: str = ""


@dataclass
class RuntimeConfig:
    # Runtime handler names accepted in RunPodSandbox (the empty name is the default).
    handlers: list[str] = field(default_factory=lambda: ["pycri"])
    # Interpreter of the zygote and the pod shims (they use only the standard library
    # and this project); empty = the daemon's own. CPython 3.12+ makes shims smaller
    # (immortal objects: fewer copy-on-write pages after fork).
    shim_python: str = ""
    # SIGTERM-to-SIGKILL grace when StopPodSandbox kills containers that are still
    # running. kubelet stops containers (with their own grace) first; like containerd,
    # the pod stop then kills what is left at once.
    stop_grace_seconds: float = 0.0


@dataclass
class CdiConfig:
    # Resolve CDI devices (ContainerConfig.CDI_devices, cdi.k8s.io/* annotations); when off, a
    # container asking for one fails instead of starting without it.
    enable: bool = True
    # CDI spec directories, lowest priority first: a later one wins on a device name clash.
    spec_dirs: list[str] = field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])


@dataclass
class NriConfig:
    # NRI (Node Resource Interface) plugins; the names are containerd's.
    enable: bool = True
    socket_path: str = "/var/run/nri/nri.sock"
    # Pre-installed plugins (executables named NN-name), started by pycri.
    plugin_path: str = "/opt/nri/plugins"
    # Plugin configs: NN-name.conf or name.conf, handed to the plugin in Configure.
    plugin_config_path: str = "/etc/nri/conf.d"
    plugin_registration_timeout: float = 5.0   # seconds
    plugin_request_timeout: float = 2.0        # seconds, per plugin and event
    # No socket: only pre-installed plugins.
    disable_connections: bool = False


@dataclass
class Config:
    socket: str = "/run/pycri/pycri.sock"
    root: str = "/var/lib/pycri"
    state: str = "/run/pycri"
    log_level: str = "info"
    log_format: str = "text"
    cgroup_driver: str = "cgroupfs"
    # Parent cgroup of pods when the request does not name one.
    cgroup_parent: str = "/kubepods"
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    cni: CniConfig = field(default_factory=CniConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    cdi: CdiConfig = field(default_factory=CdiConfig)
    nri: NriConfig = field(default_factory=NriConfig)


# -- schema checking ---------------------------------------------------------

def _check_value(name: str, value: Any, typ: Any, origin: str) -> Any:
    where = f"'{name}' in {origin}"
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return _check_table(value, typ, origin, prefix=name + ".")
    if get_origin(typ) is list:
        (item_type,) = get_args(typ)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        return [_check_value(f"{name}[{i}]", v, item_type, origin) for i, v in enumerate(value)]
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {typ}")  # pragma: no cover


def _check_table(data: dict[str, Any], cls: Any, origin: str, prefix: str = "") -> dict[str, Any]:
    hints = get_type_hints(cls)
    checked: dict[str, Any] = {}
    for key, value in data.items():
        if key not in hints:
            known = ", ".join(sorted(hints))
            raise ConfigError(f"unknown key '{prefix}{key}' in {origin} (known keys: {known})")
        checked[key] = _check_value(prefix + key, value, hints[key], origin)
    return checked


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: Any, data: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        typ = hints[key]
        kwargs[key] = _build(typ, value) if dataclasses.is_dataclass(typ) else value
    return cls(**kwargs)


def _validate_semantics(cfg: Config) -> None:
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {cfg.log_level!r}")
    if cfg.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {cfg.log_format!r}")
    if cfg.cgroup_driver not in CGROUP_DRIVERS:
        raise ConfigError(
            f"cgroup_driver must be one of {', '.join(CGROUP_DRIVERS)}, got {cfg.cgroup_driver!r}")
    for name in ("socket", "root", "state"):
        if not str(getattr(cfg, name)).startswith("/"):
            raise ConfigError(f"{name} must be an absolute path, got {getattr(cfg, name)!r}")
    if cfg.runtime.shim_python and not os.access(cfg.runtime.shim_python, os.X_OK):
        raise ConfigError(f"runtime.shim_python {cfg.runtime.shim_python!r} is not an executable")
    parse_host_port(cfg.streaming.address, "streaming.address")
    if cfg.metrics.address:
        parse_host_port(cfg.metrics.address, "metrics.address")
    if cfg.streaming.token_ttl_seconds <= 0:
        raise ConfigError("streaming.token_ttl_seconds must be positive")
    if cfg.registry.stall_timeout_seconds <= 0:
        raise ConfigError("registry.stall_timeout_seconds must be positive")
    if cfg.registry.max_concurrent_downloads < 1:
        raise ConfigError("registry.max_concurrent_downloads must be at least 1")
    for name in ("plugin_registration_timeout", "plugin_request_timeout"):
        if getattr(cfg.nri, name) <= 0:
            raise ConfigError(f"nri.{name} must be positive")
    if not cfg.nri.socket_path.startswith("/"):
        raise ConfigError(f"nri.socket_path must be an absolute path, got {cfg.nri.socket_path!r}")
    if cfg.cni.plugin_timeout_seconds <= 0:
        raise ConfigError("cni.plugin_timeout_seconds must be positive")
    for i, d in enumerate(cfg.cdi.spec_dirs):
        if not d.startswith("/"):
            raise ConfigError(f"cdi.spec_dirs[{i}] must be an absolute path, got {d!r}")
    bridge = cfg.cni.default_bridge
    if not 0 < len(bridge) <= 15 or "/" in bridge or any(c.isspace() for c in bridge):
        raise ConfigError(f"cni.default_bridge must be a 1-15 character interface name without "
                          f"'/' or spaces, got {bridge!r}")
    try:
        ipaddress.ip_network(cfg.cni.default_subnet)
    except ValueError as exc:
        raise ConfigError(f"cni.default_subnet: {exc}") from None


def parse_host_port(value: str, name: str) -> tuple[str, int]:
    """Splits 'host:port' (IPv6 as '[::1]:port'); raises ConfigError naming the key."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{name} must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


def read_file(path: Path) -> dict[str, Any]:
    """Parses and schema-checks one TOML file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return _check_table(data, Config, str(path))


def drop_in_dir(config_file: Path) -> Path:
    """/etc/pycri/pycri.toml -> /etc/pycri/pycri.d"""
    return config_file.with_name(config_file.stem + ".d")


def load(config_file: Path | None = None, overrides: dict[str, Any] | None = None,
         require_file: bool = False) -> Config:
    """Builds the effective configuration.

    config_file defaults to /etc/pycri/pycri.toml; a missing default file is not
    an error (require_file makes it one, for an explicit --config). overrides
    are flag values in the file's key layout ({"streaming": {"address": ...}}).
    """
    path = config_file or DEFAULT_CONFIG_FILE
    merged: dict[str, Any] = {}
    if path.exists():
        merged = _merge(merged, read_file(path))
    elif require_file:
        raise ConfigError(f"config file {path} does not exist")
    dropins = drop_in_dir(path)
    if dropins.is_dir():
        for dropin in sorted(dropins.glob("*.toml")):
            merged = _merge(merged, read_file(dropin))
    if overrides:
        merged = _merge(merged, _check_table(overrides, Config, "command-line flags"))
    cfg: Config = _build(Config, merged)
    _validate_semantics(cfg)
    return cfg


# -- TOML output (pycri config) ----------------------------------------------

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value)} as TOML")


def to_toml(cfg: Config) -> str:
    """The configuration as a TOML document that load() reads back unchanged."""
    data = dataclasses.asdict(cfg)
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"
