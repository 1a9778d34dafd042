"""A real OCI registry (Debian's ``docker-registry``) on 127.0.0.1 for tests.

Usage::

    from tests.support.registry import Registry

    with Registry() as reg:                      # plain HTTP, no auth
        print(reg.url, reg.host)                 # http://127.0.0.1:PORT, 127.0.0.1:PORT
    with Registry(users={"alice": "secret"}) as reg:   # htpasswd basic auth
        ...
    with Registry(tls=True) as reg:              # HTTPS with a fresh self-signed CA
        reg.ca_path                              # PEM file to trust (hosts.toml `ca`)

    @pytest.fixture(scope="session")
    def registry():
        with Registry() as reg:
            yield reg

The registry listens on a free port of 127.0.0.1, stores blobs in a temporary
directory, and writes its YAML config there. ``stop()`` (or leaving the ``with``
block) terminates the process and removes the directory. The process's access
log (one line per HTTP request) is kept so tests can count requests:
``reg.requests("/blobs/sha256:…")``.

``stop()`` followed by ``start()`` restarts the same registry with the same
storage and port (to test a registry that goes away and comes back).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import httpx

from pycri_common.timeouts import SCALE

REGISTRY_BINARY = "/usr/bin/docker-registry"

_ACCESS_RE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (``$2b$``) of password via libcrypt, as htpasswd -B makes."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt.restype = ctypes.c_char_p
    salt = lib.crypt_gensalt(b"$2b$", 5, None, 0)
    hashed = lib.crypt(password.encode(), salt)
    if not hashed or not hashed.startswith(b"$2"):
        raise RuntimeError("libcrypt cannot make bcrypt hashes")
    return hashed.decode()


def make_self_signed_cert(directory: Path, host_ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """(cert, key) PEM files of a self-signed certificate for host_ip (openssl CLI)."""
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=pycri-test-registry", "-addext", f"subjectAltName=IP:{host_ip}",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _yaml_config(storage: Path, port: int, htpasswd: Path | None,
                 tls: tuple[Path, Path] | None = None) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {storage}",
        "  delete:",
        "    enabled: true",
        "  redirect:",
        "    disable: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: pycri-test-secret",
    ]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls[0]}", f"    key: {tls[1]}"]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: pycri-test", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


class Registry:
    """One docker-registry process on 127.0.0.1 with its own temp storage."""

    def __init__(self, users: dict[str, str] | None = None, port: int | None = None,
                 tls: bool = False) -> None:
        self.users = dict(users or {})
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pycri-registry-"))
        self.storage = self.dir / "storage"
        self.storage.mkdir()
        self.log_path = self.dir / "access.log"
        htpasswd = None
        if self.users:
            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text(
                "".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
        self.tls = make_self_signed_cert(self.dir) if tls else None
        self.config_path = self.dir / "config.yml"
        self.config_path.write_text(_yaml_config(self.storage, self.port, htpasswd, self.tls))
        self.proc: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------
    @property
    def host(self) -> str:
        """host:port as it appears in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_path(self) -> Path | None:
        """The self-signed certificate to trust (TLS registries only)."""
        return self.tls[0] if self.tls else None

    @property
    def auth(self) -> tuple[str, str] | None:
        """(user, password) of the first user, for httpx, or None without auth."""
        return next(iter(self.users.items()), None)

    # -- life cycle --------------------------------------------------------
    def start(self, timeout: float = 10.0) -> Registry:
        if self.proc is not None:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps its own copy
        try:
            self.proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(self.config_path)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout * SCALE  # stretched on an emulated CPU (VM leg)
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"docker-registry exited at start: {self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/v2/", timeout=1.0, verify=False)
                if r.status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop(remove=False)
                raise RuntimeError(f"docker-registry did not answer: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self, remove: bool = True) -> None:
        """Stops the process; with remove=True also deletes storage and config."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
            return self
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection --------------------------------------------------------
    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def request_log(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request answered so far."""
        out: list[tuple[str, str, int]] = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return out
        for m in _ACCESS_RE.finditer(text):
            out.append((m["method"], m["path"], int(m["status"])))
        return out

    def requests(self, path_contains: str, method: str = "GET") -> int:
        """How many requests with this method had a path containing path_contains."""
        return sum(1 for m, p, _ in self.request_log() if m == method and path_contains in p)

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (to corrupt or delete it in a test)."""
        algo, hexd = digest.split(":", 1)
        return (self.storage / "docker/registry/v2/blobs" / algo / hexd[:2] / hexd / "data")


def registry_available() -> bool:
    return os.access(REGISTRY_BINARY, os.X_OK)
