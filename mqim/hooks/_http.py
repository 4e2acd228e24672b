"""A minimal HTTP/1.1 POST client on asyncio streams (http:// and https://), keep-alive.

Only what webhooks need: one request at a time per `HttpClient`, `Content-Length` bodies,
responses with `Content-Length`, chunked or close-delimited bodies (read and discarded up to a
bound). Every attempt is bounded by a timeout covering connect, request and response. Any
network, TLS or parse error is a `HookHttpError`; a status line read is a result, whatever the
status.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from mqim.hooks._exceptions import HookHttpError

MAX_HEAD_BYTES: Final = 16384
"""Largest response status line plus headers accepted."""

_USER_AGENT: Final = "mqim-hooks/1"


class HttpClient:
    """POSTs to one URL, keeping the connection open between requests.

    Args:
        url: `http://` or `https://` URL.
        timeout_s: Bound of one attempt (connect, send, read the answer).
        cafile: CA bundle for https; None uses the system's trust store.
        max_response_bytes: Body bytes read from an answer; a longer one closes the connection.
    """

    def __init__(
        self, *, url: str, timeout_s: float, cafile: Path | None = None, max_response_bytes: int
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HookHttpError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default_port = self._port == (443 if self._tls else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._timeout_s = timeout_s
        self._max_body = max_response_bytes
        self._ssl: ssl.SSLContext | None = None
        if self._tls:
            self._ssl = ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """Send one POST and return the response status.

        Raises:
            HookHttpError: Connecting, sending or reading the answer failed or timed out.
        """
        reused = self._writer is not None
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._exchange(body, headers)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, HookHttpError, TimeoutError) as exc:
            await self.close()
            if reused and not isinstance(exc, TimeoutError):
                # A kept-alive connection the server closed meanwhile: one fresh attempt.
                try:
                    async with asyncio.timeout(self._timeout_s):
                        return await self._exchange(body, headers)
                except (
                    OSError,
                    ssl.SSLError,
                    asyncio.IncompleteReadError,
                    HookHttpError,
                    TimeoutError,
                ) as again:
                    await self.close()
                    raise HookHttpError(_describe(again)) from again
            raise HookHttpError(_describe(exc)) from exc

    async def close(self) -> None:
        """Close the kept-alive connection, if any."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            # Already gone: nothing left to release.
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._tls else None
            )
        reader, writer = self._reader, self._writer
        assert reader is not None
        lines = [
            f"POST {self._path} HTTP/1.1",
            f"Host: {self._host_header}",
            f"User-Agent: {_USER_AGENT}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status, length, chunked, close = await self._read_head(reader)
        keep = await self._read_body(reader, length=length, chunked=chunked) and not close
        if not keep:
            await self.close()
        return status

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[int, int | None, bool, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as exc:
            raise HookHttpError("response head too long") from exc
        if len(head) > MAX_HEAD_BYTES:
            raise HookHttpError("response head too long")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HookHttpError(f"malformed status line {status_line[:80]!r}")
        length: int | None = None
        chunked = False
        close = parts[0] == "HTTP/1.0"
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            key, value = name.strip().lower(), value.strip()
            if key == "content-length" and value.isdigit():
                length = int(value)
            elif key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif key == "connection":
                close = value.lower() == "close" or (close and value.lower() != "keep-alive")
        return int(parts[1]), length, chunked, close

    async def _read_body(self, reader: asyncio.StreamReader, *, length: int | None, chunked: bool) -> bool:
        """Read and discard the body; False when the connection cannot be reused."""
        if chunked:
            total = 0
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size_text = size_line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError as exc:
                    raise HookHttpError("malformed chunk size") from exc
                total += size
                if total > self._max_body:
                    return False
                if size == 0:
                    await _skip_trailers(reader)
                    return True
                await reader.readexactly(size + 2)
        if length is not None:
            if length > self._max_body:
                return False
            await reader.readexactly(length)
            return True
        # Neither length nor chunked: the body ends with the connection (bounded read).
        await reader.read(self._max_body)
        return False


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            return


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before the answer"
    return str(exc) or type(exc).__name__
