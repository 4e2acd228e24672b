"""mqim's HTTP side: one small asyncio HTTP server and the web chat client it serves.

`HttpServer` routes GET/HEAD requests to `HttpHandler`s (the web client's `WebSite`, the admin
endpoints of `mqim.admin`). The page itself (`web/src`, built by `make web` into
`mqim/web/static`) is a plain MQTT 3.1.1 client of the v1 wire contract over mqim's WebSocket
listener; `WebSite` only serves its files and `/config.json`, which names the WebSocket URL.
"""

from mqim.web._exceptions import WebError
from mqim.web._http import (
    HttpHandler,
    HttpRequest,
    HttpResponse,
    HttpServer,
)
from mqim.web._server import WebOptions, WebServer, WebSite

__all__ = [
    "HttpHandler",
    "HttpRequest",
    "HttpResponse",
    "HttpServer",
    "WebError",
    "WebOptions",
    "WebServer",
    "WebSite",
]
