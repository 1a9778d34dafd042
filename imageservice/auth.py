"""Registry credentials and the two auth schemes of the distribution spec.

Credentials come from the CRI ``AuthConfig`` of the request (username/password,
``auth`` = base64 "user:password", ``identity_token`` = OAuth2 refresh token,
``registry_token`` = a bearer token used as is) or, when the request has none,
from a docker ``config.json`` (``auths`` entries; credential helpers are not run).

Challenges: ``WWW-Authenticate: Basic realm=…`` -> send basic credentials;
``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` -> get a token from the
realm (GET with basic credentials, or POST grant_type=refresh_token with an
identity token, as Docker does) and send ``Authorization: Bearer <token>``.
"""
from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pycri_common.bounded_json import load_json
from pycri_common.errors import InvalidArgument, PermissionDenied, Unavailable
from pycri_common.outside_files import read_regular_file

log = logging.getLogger(__name__)

DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
MAX_TOKEN_RESPONSE = 1024 * 1024
MAX_DOCKER_CONFIG = 4 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token or self.registry_token)

    def __repr__(self) -> str:  # never log secrets
        return f"Credentials(username={self.username!r}, ...)"

    @classmethod
    def from_auth_config(cls, username: str = "", password: str = "", auth: str = "",
                         identity_token: str = "", registry_token: str = "") -> Credentials:
        if auth and not username:
            username, password = decode_auth(auth)
        return cls(username, password, identity_token, registry_token)


def decode_auth(auth: str) -> tuple[str, str]:
    try:
        user, sep, pw = base64.b64decode(auth, validate=False).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("auth is not base64 of 'username:password'") from None
    if not sep:
        raise InvalidArgument("auth is not base64 of 'username:password'")
    return user, pw


def _host_of_key(key: str) -> str:
    if "://" in key:
        key = urlsplit(key).netloc
    key = key.split("/", 1)[0]
    if key in ("index.docker.io", "registry-1.docker.io", "docker.io"):
        return "docker.io"
    return key


class DockerConfig:
    """Credentials from a docker config.json (read on each lookup, so edits apply)."""

    def __init__(self, path: str = "") -> None:
        self.path = Path(path) if path else None

    def lookup(self, host: str) -> Credentials:
        if self.path is None or not self.path.exists():
            return Credentials()
        try:
            doc = load_json(read_regular_file(self.path, MAX_DOCKER_CONFIG, "docker config"),
                            f"docker config {self.path}", MAX_DOCKER_CONFIG)
        except InvalidArgument as e:
            log.warning("cannot read docker config: %s", e)
            return Credentials()
        auths = doc.get("auths") if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            return Credentials()
        want = _host_of_key(host)
        for key, entry in auths.items():
            if _host_of_key(key) == want and isinstance(entry, dict):
                try:
                    return Credentials.from_auth_config(
                        username=entry.get("username", ""), password=entry.get("password", ""),
                        auth=entry.get("auth", ""), identity_token=entry.get("identitytoken", ""),
                        registry_token=entry.get("registrytoken", ""))
                except Exception:  # noqa: BLE001 - a bad entry must not break pulls
                    log.warning("bad auth entry for %s in %s", key, self.path)
        return Credentials()


_PARAM_RE = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """("bearer"|"basic"|…, params) from one WWW-Authenticate header value."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): (m[2] if m[2] is not None else m[3])
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def fetch_token(client: httpx.Client, params: dict[str, str], scope: str,
                creds: Credentials, timeout: httpx.Timeout) -> str:
    """A bearer token from the challenge's realm."""
    if creds.registry_token:
        return creds.registry_token
    realm = params.get("realm", "")
    if not realm.startswith(("http://", "https://")):
        raise PermissionDenied(f"registry sent a bearer challenge with a bad realm {realm!r}")
    service = params.get("service", "")
    scopes = [s for s in (params.get("scope", ""), scope) if s]
    try:
        auth: tuple[str, str] | None = None
        if creds.identity_token:
            req = client.build_request(
                "POST", realm, data={"grant_type": "refresh_token", "client_id": "pycri",
                                     "refresh_token": creds.identity_token,
                                     "service": service, "scope": " ".join(scopes)},
                timeout=timeout)
        else:
            q: list[tuple[str, str | int | float | bool | None]] = [("service", service)] if service else []
            q += [("scope", s) for s in dict.fromkeys(scopes)]
            auth = (creds.username, creds.password) if creds.username else None
            req = client.build_request("GET", realm, params=q, timeout=timeout)
        # streamed and capped: the realm is named by the registry, its answer is not trusted
        r = client.send(req, auth=auth, stream=True)
        try:
            status = r.status_code
            body = bytearray()
            if status == 200:
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > MAX_TOKEN_RESPONSE:
                        raise Unavailable(f"token endpoint {realm} answered more than "
                                          f"{MAX_TOKEN_RESPONSE} bytes")
        finally:
            r.close()
    except httpx.HTTPError as e:
        raise Unavailable(f"token endpoint {realm} unreachable: {e}") from None
    if status in (401, 403):
        raise PermissionDenied(f"token endpoint {realm} refused the credentials "
                               f"(HTTP {status})")
    if status != 200:
        raise Unavailable(f"token endpoint {realm} answered HTTP {status}")
    doc: Any = load_json(bytes(body), f"the answer of token endpoint {realm}", MAX_TOKEN_RESPONSE,
                         error=Unavailable)
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not token or not isinstance(token, str):
        raise Unavailable(f"token endpoint {realm} answered without a token")
    return token
