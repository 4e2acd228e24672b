"""The web chat client as an `HttpHandler` of mqim's HTTP server (`mqim.web._http`).

It serves the built client (`make web`) and `/config.json`, which tells the page where mqim's
WebSocket listener is. `WebServer` is that handler alone on a listener of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from mqim.web._http import MAX_HEAD_BYTES, HttpRequest, HttpResponse, HttpServer, error_response

log = logging.getLogger("mqim.web")

DEFAULT_ROOT = Path(__file__).resolve().parent / "static"
"""Where `make web` writes the built client (git-ignored)."""

__all__ = ["DEFAULT_ROOT", "MAX_HEAD_BYTES", "WebOptions", "WebServer", "WebSite"]

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest file served; the client's bundle is far below this."""

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
}

# esbuild names bundles `name-HASH.ext`: their content never changes under that name.
_HASHED = re.compile(r"-[A-Z0-9]{8,}\.[a-z0-9]+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOSTNAME = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})$")

_CSP = (
    "Content-Security-Policy",
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; "
    # mqtt.js runs its keepalive timer in a worker it creates from a blob: URL.
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
)

_NOT_BUILT = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mqim: web client not built</title></head>
<body><h1>The mqim web client is not built</h1>
<p>Run <code>make web</code> in the mqim checkout (it runs <code>npm ci</code> and the build),
then reload this page.</p></body></html>
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebOptions:
    """Where the web client is served and where it finds the WebSocket listener.

    Attributes:
        host: Address the HTTP listener binds to.
        port: Its port; 0 picks a free one (see `WebServer.port`).
        root: Directory of the built client; None means the package's `static` directory.
        ws_url: The WebSocket URL the page connects to, for a server behind a proxy; None
            derives `ws://{the host the browser used}:{ws port}/` per request.
        max_connections: Concurrent HTTP connections; more are closed at once.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    root: Path | None = None
    ws_url: str | None = None
    max_connections: int = 64


class WebSite:
    """The web chat client and `/config.json` as an `HttpHandler`.

    Args:
        options: Client directory and WebSocket URL.
        ws_port: Bound port of the WebSocket listener the page connects to.
    """

    def __init__(self, *, options: WebOptions, ws_port: int) -> None:
        self.options = options
        self.root = (options.root or DEFAULT_ROOT).resolve()
        self.ws_port = ws_port
        if not (self.root / "index.html").is_file():
            log.warning("web client not built (%s missing): run `make web`", self.root / "index.html")

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Every path is the site's: a file of the build, `/config.json`, or 404."""
        response = await self._answer(request.path, request.headers)
        return HttpResponse(response.status, (*response.headers, _CSP), response.body)

    async def _answer(self, path: str, headers: Mapping[str, str]) -> HttpResponse:
        if path == "/config.json":
            return self._config(headers.get("host", ""))
        if path == "/":
            path = "/index.html"
        segments = path.split("/")[1:]
        # Only plain names: no "..", no hidden files, no backslashes or NULs; the resolved path must
        # still be inside the root (a symlink out of it is not followed).
        if not segments or any(not _SEGMENT.match(s) or s.startswith(".") for s in segments):
            return error_response(HTTPStatus.NOT_FOUND)
        body = await asyncio.to_thread(self._load, segments)
        if body is None:
            if segments == ["index.html"]:
                return HttpResponse(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    (("Content-Type", _CONTENT_TYPES[".html"]), ("Cache-Control", "no-store")),
                    _NOT_BUILT,
                )
            return error_response(HTTPStatus.NOT_FOUND)
        name = segments[-1]
        etag = '"' + hashlib.sha256(body).hexdigest()[:24] + '"'
        cache = (
            "public, max-age=31536000, immutable"
            if _HASHED.search(name)
            # Unhashed files (index.html) must be revalidated so a rebuild is picked up.
            else "no-cache"
        )
        common = (("ETag", etag), ("Cache-Control", cache))
        if etag in (tag.strip() for tag in headers.get("if-none-match", "").split(",")):
            return HttpResponse(HTTPStatus.NOT_MODIFIED, common, b"")
        content_type = _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
        return HttpResponse(HTTPStatus.OK, (("Content-Type", content_type), *common), body)

    def _load(self, segments: list[str]) -> bytes | None:
        """The bytes of a regular file under the root, or None. Blocking: run in a thread."""
        try:
            real = self.root.joinpath(*segments).resolve()
            if not real.is_relative_to(self.root) or not real.is_file():
                return None
            if real.stat().st_size > MAX_FILE_BYTES:
                return None
            return real.read_bytes()
        except (OSError, RuntimeError):
            return None

    def _config(self, host_header: str) -> HttpResponse:
        url = self.options.ws_url
        if url is None:
            host = _hostname(host_header) or self.options.host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            url = f"ws://{host}:{self.ws_port}/"
        body = json.dumps({"v": 1, "ws_url": url}).encode()
        return HttpResponse(
            HTTPStatus.OK,
            (("Content-Type", _CONTENT_TYPES[".json"]), ("Cache-Control", "no-store")),
            body,
        )


def _hostname(host_header: str) -> str | None:
    """The host part of a `Host` header, or None when it is not a plain host name or address."""
    value = host_header.strip()
    if value.startswith("["):
        end = value.find("]")
        host = value[: end + 1] if end > 0 else ""
    else:
        host = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return host if host and _HOSTNAME.match(host) else None


class WebServer(HttpServer):
    """The web client alone on its own HTTP listener. Use as an async context manager.

    Args:
        options: Listener address, client directory and WebSocket URL.
        ws_port: Bound port of the WebSocket listener the page connects to.
    """

    def __init__(self, *, options: WebOptions, ws_port: int) -> None:
        self.site = WebSite(options=options, ws_port=ws_port)
        super().__init__(
            host=options.host,
            port=options.port,
            handlers=[self.site],
            max_connections=options.max_connections,
            what="the web client",
        )
        self.options = options
