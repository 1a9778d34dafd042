"""A tiny registry front on 127.0.0.1 for tests: Bearer tokens, redirects, faults.

``TokenProxy(upstream_url, users={"bob": "pw"})`` serves:
- ``GET /token?service=…&scope=…`` (basic auth of one of users, or none if users is
  empty) -> ``{"token": …}``; each call is counted in ``token_requests``.
- ``POST /token`` with ``grant_type=refresh_token&refresh_token=<refresh_token>`` (the
  OAuth2 flow Docker uses for identity tokens) -> ``{"access_token": …}``.
- ``/v2/…``: without ``Authorization: Bearer <token>`` a 401 with
  ``WWW-Authenticate: Bearer realm=…/token,service=pycri-test,scope=repository:<repo>:pull``;
  with it, manifests are proxied from upstream and blobs answered with a 307
  redirect to upstream (as registries behind a CDN do).
- ``mode``: "redirect" (default), "proxy" (blobs streamed through), "truncate" (blob
  bodies cut in half, then the connection closed), "stall" (headers and a few bytes,
  then silence until ``release`` is set), "drip" (1 KiB every 50 ms).
  ``closed_early`` counts blob responses whose client went away mid-body;
  ``max_active_blobs`` is the most blob responses in flight at once.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import httpx


class TokenProxy:
    def __init__(self, upstream_url: str, users: dict[str, str] | None = None,
                 mode: str = "redirect") -> None:
        self.upstream = upstream_url.rstrip("/")
        self.users = dict(users or {})
        self.mode = mode
        self.token = secrets.token_hex(16)
        self.refresh_token = "refresh-" + secrets.token_hex(8)
        self.token_requests = 0
        self.closed_early = 0
        self.blob_requests = 0
        self.active_blobs = 0
        self.max_active_blobs = 0
        self._lock = threading.Lock()
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None
                      ) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                proxy.token_requests += 1
                if (urlsplit(self.path).path == "/token"
                        and form.get("grant_type") == ["refresh_token"]
                        and form.get("refresh_token") == [proxy.refresh_token]):
                    body = json.dumps({"access_token": proxy.token}).encode()
                    self._send(200, body, {"Content-Type": "application/json"})
                else:
                    self._send(401, b'{"details":"bad refresh token"}')

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path == "/token":
                    proxy._token(self, parse_qs(url.query))
                    return
                if not url.path.startswith("/v2/"):
                    self._send(404)
                    return
                if self.headers.get("Authorization") != f"Bearer {proxy.token}":
                    repo = url.path[4:].split("/manifests/")[0].split("/blobs/")[0]
                    realm = f"http://127.0.0.1:{proxy.port}/token"
                    self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                        "WWW-Authenticate": f'Bearer realm="{realm}",service="pycri-test",'
                                            f'scope="repository:{repo.strip("/")}:pull"',
                        "Content-Type": "application/json"})
                    return
                if "/blobs/" in url.path:
                    proxy._blob(self, url.path)
                    return
                r = httpx.get(proxy.upstream + url.path,
                              headers={"Accept": self.headers.get("Accept", "*/*")})
                hdrs = {k: v for k, v in r.headers.items()
                        if k.lower() in ("content-type", "docker-content-digest")}
                self._send(r.status_code, r.content, hdrs)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass   # clients that hang up mid-response are part of the tests

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _token(self, h: Any, query: dict[str, list[str]]) -> None:
        self.token_requests += 1
        if self.users:
            import base64
            auth = h.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = self.users.get(user) == pw
            if not ok:
                h._send(401, b'{"details":"bad credentials"}')
                return
        body = json.dumps({"token": self.token, "expires_in": 300}).encode()
        h._send(200, body, {"Content-Type": "application/json"})

    def _blob(self, h: Any, path: str) -> None:
        self.blob_requests += 1
        if self.mode == "redirect":
            h._send(307, b"", {"Location": self.upstream + path})
            return
        data = httpx.get(self.upstream + path).content
        with self._lock:
            self.active_blobs += 1
            self.max_active_blobs = max(self.max_active_blobs, self.active_blobs)
        try:
            self._send_blob(h, data)
        finally:
            with self._lock:
                self.active_blobs -= 1

    def _send_blob(self, h: Any, data: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.send_header("Content-Type", "application/octet-stream")
        h.end_headers()
        try:
            if self.mode == "proxy":
                h.wfile.write(data)
            elif self.mode == "truncate":
                h.wfile.write(data[: len(data) // 2])
                h.wfile.flush()
                h.close_connection = True
                import socket
                h.connection.shutdown(socket.SHUT_RDWR)
            elif self.mode == "stall":
                h.wfile.write(data[:16])
                h.wfile.flush()
                self.release.wait(30)
                h.close_connection = True
            elif self.mode == "drip":
                for i in range(0, len(data), 1024):
                    h.wfile.write(data[i:i + 1024])
                    h.wfile.flush()
                    time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            self.closed_early += 1
            h.close_connection = True

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
