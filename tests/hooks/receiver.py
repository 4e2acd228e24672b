"""A real HTTP/1.1 receiver on loopback (asyncio streams) that records webhook POSTs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from mqim.hooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        return verify(
            secret,
            signature=self.headers.get(SIGNATURE_HEADER.lower(), ""),
            timestamp=self.headers.get(TIMESTAMP_HEADER.lower(), ""),
            body=self.body,
            now=time.time(),
        )


class Receiver:
    """Records every POST and answers `status`; `stop()` really closes the socket."""

    def __init__(self, *, port: int = 0, status: int = 200, delay_s: float = 0.0) -> None:
        self.port = port
        self.status = status
        self.delay_s = delay_s
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Event()

    async def start(self) -> Receiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._conns):
            writer.close()
        await server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def wait_for(self, count: int, *, timeout: float = 20.0) -> list[Request]:
        """Wait until at least `count` requests arrived (bounded)."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.requests)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                self.requests.append(Request(request_line.split(" ")[1], headers, body))
                self._arrived.set()
                answer = b"ok"
                writer.write(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(answer)}\r\n\r\n".encode() + answer
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass  # the client went away: nothing to answer
        finally:
            self._conns.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
