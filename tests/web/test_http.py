"""The web client's HTTP listener through real sockets: what it serves and what it refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqim.web import WebOptions, WebServer
from mqim.web._server import MAX_HEAD_BYTES


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[WebServer]:
    root = tmp_path / "static"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "assets" / "app-ABCDEFGH.js").write_text("export {};")
    (tmp_path / "secret.txt").write_text("outside the root")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    async with WebServer(options=WebOptions(port=0, root=root), ws_port=18083) as server:
        yield server


async def request(server: WebServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(raw)
    await writer.drain()
    async with asyncio.timeout(10):
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1:8080", *extra, "", ""]).encode()


async def test_index_assets_and_config(site: WebServer) -> None:
    status, headers, body = await request(site, get("/"))
    assert (status, headers["content-type"], headers["cache-control"]) == (
        200,
        "text/html; charset=utf-8",
        "no-cache",
    )
    assert body.startswith(b"<!doctype html>")
    assert "default-src 'self'" in headers["content-security-policy"]
    status, headers, _ = await request(site, get("/assets/app-ABCDEFGH.js"))
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert "immutable" in headers["cache-control"]
    status, _, body = await request(site, get("/assets/app-ABCDEFGH.js", f"If-None-Match: {headers['etag']}"))
    assert (status, body) == (304, b"")
    status, headers, body = await request(site, get("/config.json"))
    assert status == 200
    assert json.loads(body) == {"v": 1, "ws_url": "ws://127.0.0.1:18083/"}
    status, headers, body = await request(site, get("/", method="HEAD"))
    assert (status, body) == (200, b"")
    assert int(headers["content-length"]) > 0


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/link.txt",
        "/.hidden",
        "/nope",
    ],
)
async def test_nothing_outside_the_root(site: WebServer, path: str) -> None:
    status, _, body = await request(site, get(path))
    assert status == 404
    assert b"outside the root" not in body


async def test_refusals(site: WebServer) -> None:
    status, headers, _ = await request(site, get("/", method="POST"))
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    status, _, _ = await request(site, get("/", "Content-Length: 5"))
    assert status == 400
    status, _, _ = await request(site, b"GARBAGE\r\n\r\n")
    assert status == 400
    status, _, _ = await request(site, get("/", "X-Pad: " + "a" * MAX_HEAD_BYTES))
    assert status == 431


async def test_not_built_page(tmp_path: Path) -> None:
    async with WebServer(options=WebOptions(port=0, root=tmp_path / "missing"), ws_port=1) as server:
        status, _, body = await request(server, get("/"))
    assert status == 503
    assert b"make web" in body
