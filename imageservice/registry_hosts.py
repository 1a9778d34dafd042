"""Where to fetch an image from: mirrors, plain HTTP, CAs (containerd's certs.d format).

pycri reads containerd's registry host directories (the format containerd ≥1.5
and nerdctl users know, https://github.com/containerd/containerd/blob/main/docs/hosts.md):

    <config_path>/<registry host>/hosts.toml     e.g. /etc/pycri/certs.d/registry.k8s.io/hosts.toml
    <config_path>/_default/hosts.toml            applies to registries without their own dir

A directory for a registry with a port is named ``host:port`` (``127.0.0.1:5000``).
``config_path`` may list several directories separated by ``:`` (first match wins).

hosts.toml::

    server = "https://registry.k8s.io"        # upstream; default https://<host>
                                               # (docker.io: https://registry-1.docker.io)
    ca = "/etc/pycri/certs.d/registry.k8s.io/ca.crt"   # optional, for the upstream
    skip_verify = false

    [host."http://127.0.0.1:5000"]            # mirrors, tried in file order, then server
      capabilities = ["pull", "resolve"]       # resolve = may answer tag lookups
      skip_verify = false                      # https without certificate check
      ca = "/path/ca.crt"                      # or a list of files
      override_path = false                    # true: URL already holds the /v2 API path
      [host."http://127.0.0.1:5000".header]
        x-custom = "value"

A mirror keeps the repository path: ``registry.k8s.io/pause:3.9`` through the
mirror above is fetched as ``http://127.0.0.1:5000/v2/pause/manifests/3.9``.
An ``http://`` URL is a plain-HTTP ("insecure") registry. A registry on
localhost, 127.0.0.0/8 or ::1 uses plain HTTP without any configuration, as
Docker and containerd do. ``*.crt`` files in a host directory are CAs for it
(Docker's certs.d convention). Unknown keys are an error naming the file.

The same tables can be given inline (tests, embedding): ``RegistryHosts(config_path,
inline={"registry.k8s.io": {"host": {"http://127.0.0.1:5000": {...}}}})``.
"""
from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pycri_common.errors import InvalidArgument
from pycri_common.outside_files import open_regular_file, read_regular_file

MAX_HOSTS_TOML = 1024 * 1024
_HOST_KEYS = {"capabilities", "skip_verify", "ca", "client", "override_path", "header"}
_TOP_KEYS = {"server", "capabilities", "skip_verify", "ca", "client", "override_path",
             "header", "host"}


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (with or without a port)."""
    h = host
    if h.startswith("["):
        h = h[1:h.find("]")]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if h == "localhost":   # not *.localhost: DNS may resolve it anywhere (containerd agrees)
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def default_server(host: str) -> str:
    if host == "docker.io":
        return "https://registry-1.docker.io"
    return ("http://" if is_loopback_host(host) else "https://") + host


@dataclass(frozen=True)
class Endpoint:
    """One place to ask: base URL of the /v2 API plus TLS and header settings."""

    api_base: str                      # e.g. http://127.0.0.1:5000/v2
    host: str                          # host[:port] of the URL (credential lookup)
    capabilities: frozenset[str] = frozenset({"pull", "resolve"})
    skip_verify: bool = False
    ca_files: tuple[str, ...] = ()
    client_certs: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    is_mirror: bool = False

    @property
    def scheme(self) -> str:
        return urlsplit(self.api_base).scheme

    def verify(self) -> bool | ssl.SSLContext:
        """The httpx `verify` value for this endpoint."""
        if self.scheme != "https":
            return True
        if self.skip_verify:
            return False
        if not self.ca_files and not self.client_certs:
            return True
        ctx = ssl.create_default_context()
        try:
            for ca in self.ca_files:
                with _checked_file(ca, "registry CA file") as path:
                    ctx.load_verify_locations(cafile=path)
            for cert, key in self.client_certs:
                with _checked_file(cert, "registry client certificate") as cert_path:
                    if not key:
                        ctx.load_cert_chain(cert_path)
                        continue
                    with _checked_file(key, "registry client key") as key_path:
                        ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as e:
            raise InvalidArgument(f"TLS files of {self.host}: {e}") from None
        return ctx

    def tls_key(self) -> tuple[Any, ...]:
        return (self.skip_verify, self.ca_files, self.client_certs)


@contextmanager
def _checked_file(path: str, what: str) -> Iterator[str]:
    """A path OpenSSL can read that names the same regular file as path (checked without
    blocking: a FIFO there would hang the pull), valid inside the with block."""
    fd = open_regular_file(path, what)
    try:
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


@dataclass
class HostConfig:
    mirrors: list[Endpoint] = field(default_factory=list)
    server: Endpoint | None = None


def _as_list(v: Any, what: str) -> list[str]:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return list(v)
    raise InvalidArgument(f"{what} must be a string or a list of strings")


def _endpoint(url: str, table: dict[str, Any], where: str, is_mirror: bool,
              host_dir: Path | None) -> Endpoint:
    unknown = set(table) - (_HOST_KEYS if is_mirror else _TOP_KEYS)
    if unknown:
        raise InvalidArgument(f"unknown key(s) {sorted(unknown)} in {where}")
    if "://" not in url:
        url = ("http://" if is_loopback_host(url.split("/", 1)[0]) else "https://") + url
    try:
        parts = urlsplit(url)
        parts.port   # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError as e:   # e.g. "http://[::1" (unclosed IPv6 literal)
        raise InvalidArgument(f"bad registry URL {url!r} in {where}: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidArgument(f"bad registry URL {url!r} in {where}")
    base = url.rstrip("/")
    if not table.get("override_path", False):
        base += "/v2"
    caps = table.get("capabilities", ["pull", "resolve"])
    caps_l = _as_list(caps, f"capabilities in {where}")
    for c in caps_l:
        if c not in ("pull", "resolve", "push"):
            raise InvalidArgument(f"unknown capability {c!r} in {where}")
    ca_files = _as_list(table["ca"], f"ca in {where}") if "ca" in table else []
    if not ca_files and host_dir is not None and not is_mirror:
        ca_files = sorted(str(p) for p in host_dir.glob("*.crt"))
    clients: list[tuple[str, str]] = []
    client = table.get("client", []) or []
    if isinstance(client, str):
        client = [client]
    if not isinstance(client, list):
        raise InvalidArgument(f"client in {where} must be a path or a list of paths or pairs")
    for c in client:
        if isinstance(c, str):
            clients.append((c, ""))
        elif isinstance(c, list) and 1 <= len(c) <= 2:
            clients.append((str(c[0]), str(c[1]) if len(c) > 1 else ""))
        else:
            raise InvalidArgument(f"bad client entry {c!r} in {where}")
    header = table.get("header", {}) or {}
    if not isinstance(header, dict):
        raise InvalidArgument(f"header in {where} must be a table")
    headers = []
    for k, v in header.items():
        for item in _as_list(v, f"header {k} in {where}"):
            headers.append((str(k), item))
    skip = table.get("skip_verify", False)
    if not isinstance(skip, bool):
        raise InvalidArgument(f"skip_verify in {where} must be true or false")
    return Endpoint(base, parts.netloc, frozenset(caps_l), skip, tuple(ca_files),
                    tuple(clients), tuple(headers), is_mirror)


def load_hosts_toml(data: bytes, where: str) -> dict[str, Any]:
    """The parsed hosts.toml; InvalidArgument naming it when it is not UTF-8 TOML."""
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidArgument(f"cannot read {where}: {e}") from None
    except RecursionError:  # tomllib recurses per nested array/inline table (pure Python)
        raise InvalidArgument(f"cannot read {where}: arrays or tables nested too deeply") from None


def parse_hosts_table(host: str, doc: dict[str, Any], where: str,
                      host_dir: Path | None = None) -> HostConfig:
    """A HostConfig from a parsed hosts.toml (or the same dict given inline)."""
    cfg = HostConfig()
    top = {k: v for k, v in doc.items() if k != "host"}
    hosts = doc.get("host", {}) or {}
    if not isinstance(hosts, dict):
        raise InvalidArgument(f"'host' in {where} must be a table of tables")
    for url, table in hosts.items():
        if not isinstance(table, dict):
            raise InvalidArgument(f"host.{url!r} in {where} must be a table")
        cfg.mirrors.append(_endpoint(url, table, f"{where} host {url!r}", True, None))
    server = top.pop("server", None) or default_server(host)
    if not isinstance(server, str):
        raise InvalidArgument(f"server in {where} must be a string")
    cfg.server = _endpoint(server, top, where, False, host_dir)
    return cfg


class RegistryHosts:
    """Answers "which endpoints, in which order" for a registry host name."""

    def __init__(self, config_path: str = "",
                 inline: dict[str, dict[str, Any]] | None = None) -> None:
        self.dirs = [Path(p) for p in config_path.split(":") if p] if config_path else []
        self.inline = dict(inline or {})

    def _load(self, host: str) -> HostConfig:
        if host in self.inline:
            return parse_hosts_table(host, self.inline[host], f"inline hosts[{host!r}]")
        for d in self.dirs:
            for name in (host, host.replace(":", "_")):
                hdir = d / name
                cfg = self._load_dir(host, hdir)
                if cfg is not None:
                    return cfg
        if "_default" in self.inline:
            return parse_hosts_table(host, self.inline["_default"], "inline hosts['_default']")
        for d in self.dirs:
            cfg = self._load_dir(host, d / "_default")
            if cfg is not None:
                return cfg
        return HostConfig(server=_endpoint(default_server(host), {}, host, False, None))

    @staticmethod
    def _load_dir(host: str, hdir: Path) -> HostConfig | None:
        toml = hdir / "hosts.toml"
        if toml.exists():
            return parse_hosts_table(host, load_hosts_toml(
                read_regular_file(toml, MAX_HOSTS_TOML, "registry hosts file"), str(toml)),
                str(toml), hdir)
        if hdir.is_dir() and any(hdir.glob("*.crt")):
            return parse_hosts_table(host, {}, str(hdir), hdir)
        return None

    def endpoints(self, host: str, resolve: bool = True) -> list[Endpoint]:
        """Mirrors (those with the needed capability) in order, then the upstream server."""
        cfg = self._load(host)
        need = "resolve" if resolve else "pull"
        out = [m for m in cfg.mirrors if need in m.capabilities]
        if cfg.server is not None:
            out.append(cfg.server)
        return out

