"""A small static HTTP server on asyncio streams for the web chat client.

It serves the built client (`make web`) and `/config.json`, which tells the page where mqim's
WebSocket listener is. Only GET and HEAD, one request per connection, bounded request heads,
bounded connections and time-outs: it is a file server for one page, not a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit

from mqim.web._exceptions import WebError

log = logging.getLogger("mqim.web")

DEFAULT_ROOT = Path(__file__).resolve().parent / "static"
"""Where `make web` writes the built client (git-ignored)."""

MAX_HEAD_BYTES = 8192
"""Longest request line plus headers accepted; longer gets 431."""

HEAD_TIMEOUT_S = 10.0
"""Seconds a connection has to send its whole request head."""

WRITE_TIMEOUT_S = 30.0
"""Seconds a response may take to drain to a slow reader before the connection is dropped."""

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

_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; "
        # mqtt.js runs its keepalive timer in a worker it creates from a blob: URL.
        "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
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


@dataclass(frozen=True, slots=True)
class _Response:
    status: HTTPStatus
    headers: tuple[tuple[str, str], ...]
    body: bytes


class WebServer:
    """Serves the web chat client and `/config.json` over HTTP. Use as an async context manager.

    Args:
        options: Listener address, client directory and WebSocket URL.
        ws_port: Bound port of the WebSocket listener the page connects to.
    """

    def __init__(self, *, options: WebOptions, ws_port: int) -> None:
        self.options = options
        self.root = (options.root or DEFAULT_ROOT).resolve()
        self.ws_port = ws_port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(
                self._on_connection,
                host=self.options.host,
                port=self.options.port,
                limit=MAX_HEAD_BYTES,
            )
        except OSError as exc:
            raise WebError(
                f"cannot listen on {self.options.host}:{self.options.port} for the web client: "
                f"{exc.strerror or exc}"
            ) from exc
        if not (self.root / "index.html").is_file():
            log.warning("web client not built (%s missing): run `make web`", self.root / "index.html")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "web server not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The page's address, e.g. `http://127.0.0.1:8080/`."""
        host = self.options.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    # -- connections -------------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._handlers) >= self.options.max_connections:
            writer.transport.abort()
            return
        self._handlers.add(task)
        try:
            response, head_only = await self._read_and_answer(reader)
            await self._send(writer, response, head_only=head_only)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> tuple[_Response, bool]:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), False
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("request head cut short") from exc
        try:
            text = head.decode("ascii")
        except UnicodeDecodeError:
            return _error(HTTPStatus.BAD_REQUEST), False
        lines = text.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _error(HTTPStatus.BAD_REQUEST), False
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return _error(HTTPStatus.BAD_REQUEST), False
            headers[name.lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "GET, HEAD"),)), False
        # GET and HEAD carry no body here; one that announces a body is refused rather than read.
        if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
            return _error(HTTPStatus.BAD_REQUEST), False
        head_only = method == "HEAD"
        return await self._answer(target, headers), head_only

    async def _send(self, writer: asyncio.StreamWriter, response: _Response, *, head_only: bool) -> None:
        lines = [f"HTTP/1.1 {response.status.value} {response.status.phrase}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines += [f"{name}: {value}" for name, value in _SECURITY_HEADERS]
        lines += [
            f"Content-Length: {len(response.body)}",
            f"Date: {formatdate(usegmt=True)}",
            "Connection: close",
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode("latin-1"))
        if not head_only:
            writer.write(response.body)
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await writer.drain()

    # -- routing -----------------------------------------------------------------------------------

    async def _answer(self, target: str, headers: dict[str, str]) -> _Response:
        if not target.startswith("/"):
            return _error(HTTPStatus.BAD_REQUEST)
        path = unquote(urlsplit(target).path)
        if path == "/config.json":
            return self._config(headers.get("host", ""))
        if path == "/":
            path = "/index.html"
        segments = path.split("/")[1:]
        # Only plain names: no "..", no hidden files, no backslashes or NULs; the resolved path must
        # still be inside the root (a symlink out of it is not followed).
        if not segments or any(not _SEGMENT.match(s) or s.startswith(".") for s in segments):
            return _error(HTTPStatus.NOT_FOUND)
        body = await asyncio.to_thread(self._load, segments)
        if body is None:
            if segments == ["index.html"]:
                return _Response(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    (("Content-Type", _CONTENT_TYPES[".html"]), ("Cache-Control", "no-store")),
                    _NOT_BUILT,
                )
            return _error(HTTPStatus.NOT_FOUND)
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
            return _Response(HTTPStatus.NOT_MODIFIED, common, b"")
        content_type = _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")
        return _Response(HTTPStatus.OK, (("Content-Type", content_type), *common), body)

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

    def _config(self, host_header: str) -> _Response:
        url = self.options.ws_url
        if url is None:
            host = _hostname(host_header) or self.options.host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            url = f"ws://{host}:{self.ws_port}/"
        body = json.dumps({"v": 1, "ws_url": url}).encode()
        return _Response(
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


def _error(status: HTTPStatus, extra: tuple[tuple[str, str], ...] = ()) -> _Response:
    body = f"{status.value} {status.phrase}\n".encode()
    headers = (("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"), *extra)
    return _Response(status, headers, body)
