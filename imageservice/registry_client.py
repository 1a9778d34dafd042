"""Talks to registries (OCI distribution spec / Docker registry API v2) with httpx.

A ``RegistryClient`` is shared by all pulls (it holds the HTTP connection pools);
``client.repository(ref, creds, cancel)`` gives a ``Repository`` session for one
pull, which remembers bearer tokens and tries the registry's endpoints in order
(mirrors, then upstream; see registry_hosts). Blobs are streamed in chunks; the
caller (the content store) hashes and stores them. Redirects (blob storage
behind a CDN) are followed; httpx drops the Authorization header when a redirect
leaves the origin.

Timeouts: there is no deadline for a whole pull. A read that gets no bytes for
``stall_timeout`` seconds fails with DeadlineExceeded; the caller's cancel event
(set when the gRPC client goes away) stops a download between chunks.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from imageservice.auth import Credentials, DockerConfig, fetch_token, parse_challenge
from imageservice.manifest import ACCEPT, MAX_MANIFEST_BYTES, Descriptor, detect_media_type
from imageservice.reference import Reference
from imageservice.registry_hosts import Endpoint, RegistryHosts
from pycri_common.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PycriError,
    Unavailable,
)
from pycri_common.version import __version__

log = logging.getLogger(__name__)

USER_AGENT = f"pycri/{__version__}"

# httpcore reads a response 64 KiB at a time and runs h11's parser on each read (800 rounds
# of Python for a 50 MB layer); reads of up to 1 MiB take a sixth less CPU per downloaded
# byte. A read still returns whatever the socket has, so the stall timeout is unchanged.
READ_BYTES = 1024 * 1024


def _large_reads() -> None:
    try:   # httpcore's internals: without them, reads stay at httpcore's size
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # pragma: no cover - httpcore 1.x has it
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", READ_BYTES) < READ_BYTES:
        HTTP11Connection.READ_NUM_BYTES = READ_BYTES


_large_reads()


class RegistryClient:
    def __init__(self, hosts: RegistryHosts, docker_config: DockerConfig | None = None,
                 stall_timeout: float = 60.0, connect_timeout: float = 30.0) -> None:
        self.hosts = hosts
        self.docker_config = docker_config or DockerConfig()
        # read/write: no bytes for stall_timeout = stalled; waiting for a pooled connection
        # is not a stall (other pulls are busy), so no pool timeout.
        self.timeout = httpx.Timeout(stall_timeout, connect=min(connect_timeout, stall_timeout),
                                     pool=None)
        self.stall_timeout = stall_timeout
        self._clients: dict[tuple[Any, ...], httpx.Client] = {}
        self._lock = threading.Lock()

    def http(self, ep: Endpoint) -> httpx.Client:
        key = ep.tls_key()
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                c = httpx.Client(verify=ep.verify(), follow_redirects=True, timeout=self.timeout,
                                 headers={"User-Agent": USER_AGENT},
                                 limits=httpx.Limits(max_connections=32,
                                                     max_keepalive_connections=16))
                self._clients[key] = c
            return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()

    def repository(self, ref: Reference, creds: Credentials | None = None,
                   cancel: threading.Event | None = None,
                   server_address: str = "") -> Repository:
        return Repository(self, ref, creds or Credentials(), cancel or threading.Event(),
                          server_address)


def _creds_host_matches(server_address: str, host: str) -> bool:
    if not server_address:
        return True
    from imageservice.auth import _host_of_key
    return _host_of_key(server_address) == _host_of_key(host)


class Repository:
    """One repository on one registry, for the length of a pull."""

    def __init__(self, client: RegistryClient, ref: Reference, creds: Credentials,
                 cancel: threading.Event, server_address: str) -> None:
        self.client = client
        self.ref = ref
        self.creds = creds
        self.cancel = cancel
        self.server_address = server_address
        self.scope = f"repository:{ref.path}:pull"
        self._auth: dict[str, str] = {}   # endpoint api_base -> Authorization header value

    # -- credentials and requests ----------------------------------------
    def _creds_for(self, ep: Endpoint) -> Credentials:
        if self.creds and (not ep.is_mirror
                           or (self.server_address and
                               _creds_host_matches(self.server_address, ep.host))):
            return self.creds
        return self.client.docker_config.lookup(self.ref.domain if not ep.is_mirror else ep.host)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled(f"pull of {self.ref} was cancelled")

    @contextmanager
    def _request(self, ep: Endpoint, method: str, url: str,
                 headers: dict[str, str]) -> Iterator[httpx.Response]:
        """A streamed response after the auth dance; caller reads it inside the block."""
        http = self.client.http(ep)
        hdrs = dict(ep.headers)
        hdrs.update(headers)
        for attempt in range(2):
            self._check_cancel()
            if ep.api_base in self._auth:
                hdrs["Authorization"] = self._auth[ep.api_base]
            try:
                req = http.build_request(method, url, headers=hdrs)
                resp = http.send(req, stream=True)
            except httpx.TimeoutException as e:
                raise DeadlineExceeded(
                    f"registry {ep.host} sent nothing for {self.client.stall_timeout:g}s "
                    f"({type(e).__name__}); pull of {self.ref} stalled") from None
            except httpx.HTTPError as e:
                raise Unavailable(f"cannot reach registry {ep.host} for {self.ref}: {e}") from None
            try:
                if resp.status_code == 401 and attempt == 0:
                    challenge = resp.headers.get("WWW-Authenticate", "")
                    if self._answer_challenge(ep, challenge, http):
                        continue
                yield resp
                return
            finally:
                resp.close()

    def _answer_challenge(self, ep: Endpoint, challenge: str, http: httpx.Client) -> bool:
        scheme, params = parse_challenge(challenge)
        creds = self._creds_for(ep)
        if scheme == "bearer":
            token = fetch_token(http, params, self.scope, creds, self.client.timeout)
            self._auth[ep.api_base] = f"Bearer {token}"
            return True
        if scheme == "basic" and creds.username:
            raw = f"{creds.username}:{creds.password}".encode()
            self._auth[ep.api_base] = "Basic " + base64.b64encode(raw).decode()
            return True
        return False

    def _raise_for(self, ep: Endpoint, resp: httpx.Response, what: str) -> None:
        code = resp.status_code
        if code in (401, 403):
            has = bool(self._creds_for(ep))
            raise PermissionDenied(
                f"registry {ep.host} refused access to {what} (HTTP {code}); "
                + ("the credentials were rejected" if has else "credentials are needed"))
        if code == 404:
            raise NotFound(f"{what} not found on registry {ep.host}")
        if code == 429 or code >= 500:
            raise Unavailable(f"registry {ep.host} answered HTTP {code} for {what}")
        raise Unavailable(f"registry {ep.host} answered HTTP {code} for {what}")

    def _endpoints(self, resolve: bool) -> list[Endpoint]:
        return self.client.hosts.endpoints(self.ref.domain, resolve=resolve)

    # -- manifests --------------------------------------------------------
    def get_manifest(self, reference: str) -> tuple[str, str, bytes]:
        """(digest, media type, bytes) of a manifest/index by tag or digest, verified."""
        is_digest = ":" in reference
        errors: list[PycriError] = []
        for ep in self._endpoints(resolve=not is_digest):
            url = f"{ep.api_base}/{self.ref.path}/manifests/{reference}"
            try:
                with self._request(ep, "GET", url, {"Accept": ACCEPT}) as resp:
                    if resp.status_code != 200:
                        self._raise_for(ep, resp, f"manifest {self.ref.path}:{reference}"
                                        if not is_digest else
                                        f"manifest {self.ref.path}@{reference}")
                    body = self._read_limited(resp, MAX_MANIFEST_BYTES, "manifest")
                    header_type = resp.headers.get("Content-Type", "")
                    header_digest = resp.headers.get("Docker-Content-Digest", "")
            except (NotFound, Unavailable, PermissionDenied, DeadlineExceeded) as e:
                if ep.is_mirror:
                    log.info("mirror %s failed for %s: %s; trying next", ep.host, self.ref, e)
                    errors.append(e)
                    continue
                raise
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if is_digest and digest != reference:
                if ep.is_mirror:
                    errors.append(InvalidArgument(f"mirror {ep.host} sent a wrong manifest"))
                    continue
                raise InvalidArgument(f"registry {ep.host} sent a manifest with digest {digest}, "
                                      f"expected {reference}")
            if (header_digest.startswith("sha256:") and not is_digest
                    and header_digest != digest):
                raise InvalidArgument(f"registry {ep.host} says the manifest is {header_digest} "
                                      f"but its bytes hash to {digest}")
            return digest, detect_media_type(body, header_type), body
        raise errors[-1] if errors else NotFound(f"no endpoint for {self.ref}")

    def _read_limited(self, resp: httpx.Response, limit: int, what: str) -> bytes:
        buf = bytearray()
        try:
            for chunk in resp.iter_bytes():
                self._check_cancel()
                buf += chunk
                if len(buf) > limit:
                    raise InvalidArgument(f"{what} of {self.ref} is larger than {limit} bytes")
        except httpx.TimeoutException:
            raise DeadlineExceeded(f"registry stalled sending the {what} of {self.ref}") from None
        except httpx.HTTPError as e:
            raise Unavailable(f"reading the {what} of {self.ref} failed: {e}") from None
        return bytes(buf)

    # -- blobs ------------------------------------------------------------
    def blob_chunks(self, desc: Descriptor) -> Iterator[bytes]:
        """The blob's bytes in chunks (unverified: the content store checks the digest)."""
        errors: list[PycriError] = []
        for ep in self._endpoints(resolve=False):
            url = f"{ep.api_base}/{self.ref.path}/blobs/{desc.digest}"
            started = False
            try:
                with self._request(ep, "GET", url, {}) as resp:
                    if resp.status_code != 200:
                        self._raise_for(ep, resp, f"blob {desc.digest} of {self.ref.path}")
                    started = True
                    try:
                        for chunk in resp.iter_bytes():
                            self._check_cancel()
                            yield chunk
                    except httpx.TimeoutException:
                        raise DeadlineExceeded(
                            f"registry {ep.host} sent no data for "
                            f"{self.client.stall_timeout:g}s while downloading {desc.digest} "
                            f"of {self.ref}; pull stalled") from None
                    except httpx.HTTPError as e:
                        raise Unavailable(f"download of {desc.digest} from {ep.host} "
                                          f"failed: {e}") from None
                    return
            except (NotFound, Unavailable, PermissionDenied, DeadlineExceeded) as e:
                if ep.is_mirror and not started:
                    log.info("mirror %s failed for %s: %s; trying next", ep.host, desc.digest, e)
                    errors.append(e)
                    continue
                raise
        raise errors[-1] if errors else NotFound(f"no endpoint for {self.ref}")
