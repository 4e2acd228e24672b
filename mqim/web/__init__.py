"""The web chat client's HTTP side: a small asyncio static server for the built page.

The page itself (`web/src`, built by `make web` into `mqim/web/static`) is a plain MQTT 3.1.1
client of the v1 wire contract over mqim's WebSocket listener; this package only serves its
files and `/config.json`, which names the WebSocket URL.
"""

from mqim.web._exceptions import WebError
from mqim.web._server import DEFAULT_ROOT, WebOptions, WebServer

__all__ = [
    "DEFAULT_ROOT",
    "WebError",
    "WebOptions",
    "WebServer",
]
