"""Broker URLs: `mqtt://[user[:password]@]host[:port]` and `mqtts://`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed `mqtt://[user[:password]@]host[:port]` (or `mqtts://`) URL."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse a broker URL; the port defaults to 1883 (`mqtt`) or 8883 (`mqtts`).

    Raises:
        ValueError: When the URL is not an `mqtt://` or `mqtts://` URL with a host.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL must start with mqtt:// or mqtts://, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL must not have a path, query or fragment: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid port in broker URL {url!r}") from exc
    if not parts.hostname:
        raise ValueError(f"broker URL has no host: {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerUrl(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )
