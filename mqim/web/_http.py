"""mqim's one HTTP server: a small asyncio listener that routes GET/HEAD requests to handlers.

It serves the web chat client (`WebSite`) and the admin endpoints (`mqim.admin`): both are
`HttpHandler`s, tried in order until one answers. One request per connection, bounded request
heads, bounded connections and time-outs: a server for a page and a few JSON/text endpoints,
not a web framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import Protocol, Self
from urllib.parse import unquote, urlsplit

from mqim.web._exceptions import WebError

log = logging.getLogger("mqim.web")

MAX_HEAD_BYTES = 8192
"""Longest request line plus headers accepted; longer gets 431."""

HEAD_TIMEOUT_S = 10.0
"""Seconds a connection has to send its whole request head."""

WRITE_TIMEOUT_S = 30.0
"""Seconds a response may take to drain to a slow reader before the connection is dropped."""

_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRequest:
    """One parsed request.

    Attributes:
        method: `GET` or `HEAD` (nothing else reaches a handler).
        path: The decoded path, starting with `/`.
        query: The raw query string (without `?`).
        headers: Header values by lower-case name.
    """

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete response; the server adds Content-Length, Date, Connection and security headers."""

    status: HTTPStatus
    headers: tuple[tuple[str, str], ...]
    body: bytes


class HttpHandler(Protocol):
    """Answers the requests it knows; None passes the request to the next handler (404 at the end)."""

    async def handle(self, request: HttpRequest) -> HttpResponse | None: ...


def text_response(status: HTTPStatus, body: bytes | str, *, content_type: str = "text/plain") -> HttpResponse:
    """A response that is never cached, e.g. an error or a live value."""
    data = body.encode() if isinstance(body, str) else body
    headers = (("Content-Type", f"{content_type}; charset=utf-8"), ("Cache-Control", "no-store"))
    return HttpResponse(status, headers, data)


def error_response(status: HTTPStatus, extra: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    """`{code} {phrase}` as plain text."""
    plain = text_response(status, f"{status.value} {status.phrase}\n")
    return HttpResponse(status, (*plain.headers, *extra), plain.body)


class HttpServer:
    """Serves `handlers` over HTTP on one address. Use as an async context manager.

    Args:
        host: Address to bind.
        port: Port; 0 picks a free one (see `port`).
        handlers: Tried in order for each request.
        max_connections: Concurrent connections; more are closed at once.
        what: What the listener is for, in error messages ("the web client").
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        handlers: Sequence[HttpHandler],
        max_connections: int = 64,
        what: str = "HTTP",
    ) -> None:
        self.host = host
        self.requested_port = port
        self.handlers = tuple(handlers)
        self.max_connections = max_connections
        self.what = what
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        try:
            self._server = await asyncio.start_server(
                self._on_connection, host=self.host, port=self.requested_port, limit=MAX_HEAD_BYTES
            )
        except OSError as exc:
            raise WebError(
                f"cannot listen on {self.host}:{self.requested_port} for {self.what}: {exc.strerror or exc}"
            ) from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "HTTP server not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The server's base address, e.g. `http://127.0.0.1:8080/`."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= self.max_connections:
            writer.transport.abort()
            return
        self._tasks.add(task)
        try:
            response, head_only = await self._read_and_answer(reader)
            await _send(writer, response, head_only=head_only)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> tuple[HttpResponse, bool]:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return error_response(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE), False
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError("request head cut short") from exc
        request = _parse_head(head)
        if isinstance(request, HttpResponse):
            return request, False
        for handler in self.handlers:
            try:
                response = await handler.handle(request)
            except Exception:
                # A failing endpoint must not take the listener (or the server) down.
                log.exception("%s: handler for %s failed", self.what, request.path[:200])
                return error_response(HTTPStatus.INTERNAL_SERVER_ERROR), request.method == "HEAD"
            if response is not None:
                return response, request.method == "HEAD"
        return error_response(HTTPStatus.NOT_FOUND), request.method == "HEAD"


def _parse_head(head: bytes) -> HttpRequest | HttpResponse:
    """The request, or the error response that refuses it."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return error_response(HTTPStatus.BAD_REQUEST)
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return error_response(HTTPStatus.BAD_REQUEST)
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return error_response(HTTPStatus.BAD_REQUEST)
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        return error_response(HTTPStatus.METHOD_NOT_ALLOWED, (("Allow", "GET, HEAD"),))
    # GET and HEAD carry no body here; one that announces a body is refused rather than read.
    if "transfer-encoding" in headers or headers.get("content-length", "0") != "0":
        return error_response(HTTPStatus.BAD_REQUEST)
    if not target.startswith("/"):
        return error_response(HTTPStatus.BAD_REQUEST)
    parts_url = urlsplit(target)
    return HttpRequest(method=method, path=unquote(parts_url.path), query=parts_url.query, headers=headers)


async def _send(writer: asyncio.StreamWriter, response: HttpResponse, *, head_only: bool) -> None:
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
