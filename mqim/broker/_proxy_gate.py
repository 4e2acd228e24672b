"""The PROXY protocol in front of a connection (the asyncio shell around `_proxy.py`).

A listener with `proxy_protocol` wraps its protocol factory with `proxy_gate`:

- a socket from an address in `proxy_from` must start with a PROXY header (v1 or v2) within
  `timeout_s`; the gate consumes it, then hands the transport to the MQTT connection behind a
  `ProxiedTransport` whose `peername` is the client's own address, so connection limits, the
  per-address connect rate, logs, authentication (`remote_address`) and status all see the
  client, not the load balancer. A malformed, oversized or missing header closes the socket.
- a socket from any other address is handed over untouched: it is a direct client with its own
  address, and a PROXY header it sends is not the first byte of a CONNECT, i.e. a protocol
  violation that closes it. Nobody outside `proxy_from` can claim another address.

After the hand-over the real transport calls the MQTT connection directly (`set_protocol`);
only writes and flow control pass through the wrapper.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from mqim._util import SummaryLog
from mqim.broker._exceptions import ConfigError, ProxyHeaderError
from mqim.broker._proxy import ProxyHeaderParser

log = logging.getLogger("mqim.broker.proxy")
_refusals = SummaryLog(logger=log, what="closed before MQTT (PROXY protocol)", level=logging.WARNING)

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """The addresses (or networks, `10.0.0.0/8`) allowed to send PROXY headers."""

    def __init__(self, entries: Iterable[str]) -> None:
        networks: list[_Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigError(f"proxy_from: {entry!r} is not an IP address or network") from None
        if not networks:
            raise ConfigError("proxy_protocol needs at least one proxy_from address")
        self._networks = tuple(networks)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)


class ProxiedTransport(asyncio.Transport):
    """The real transport, except that `peername` is the client's address from the header."""

    def __init__(self, *, transport: asyncio.Transport, peername: tuple[str, int]) -> None:
        super().__init__()
        self._transport = transport
        self._peername = peername

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "proxy_peername":
            return self._transport.get_extra_info("peername", default)
        return self._transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._transport.writelines(list_of_data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()


class ProxyGate(asyncio.Protocol):
    """Reads the PROXY header of a trusted proxy's socket, then hands it to `inner`."""

    __slots__ = ("_inner", "_parser", "_timeout_s", "_timer", "_transport", "_trusted")

    def __init__(self, *, inner: asyncio.Protocol, trusted: TrustedProxies, timeout_s: float) -> None:
        self._inner = inner
        self._trusted = trusted
        self._timeout_s = timeout_s
        self._parser: ProxyHeaderParser | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        if not (isinstance(peer, tuple) and peer[0] in self._trusted):
            # A direct client: its own address, and a PROXY header from it is a violation.
            transport.set_protocol(self._inner)
            self._inner.connection_made(transport)
            return
        self._transport = transport
        self._parser = ProxyHeaderParser()
        self._timer = asyncio.get_running_loop().call_later(self._timeout_s, self._timed_out)

    def data_received(self, data: bytes) -> None:
        transport, parser = self._transport, self._parser
        if transport is None or parser is None:
            return
        try:
            done = parser.feed(data)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if done is None:
            return
        header, rest = done
        self._stop_timer()
        self._parser = None
        real = transport.get_extra_info("peername")
        source = header.source if header.source is not None else (str(real[0]), int(real[1]))
        log.debug("PROXY v%d from %s: client %s:%d", header.version, real[0], source[0], source[1])
        transport.set_protocol(self._inner)
        self._inner.connection_made(ProxiedTransport(transport=transport, peername=source))
        if rest:
            self._inner.data_received(rest)

    def eof_received(self) -> bool | None:
        return None  # closed before a complete header: nothing to hand over

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._transport = None

    def _timed_out(self) -> None:
        self._timer = None
        self._refuse("no PROXY protocol header in time")

    def _refuse(self, reason: str) -> None:
        transport = self._transport
        self._stop_timer()
        self._parser = None
        self._transport = None
        if transport is not None:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) else "?"
            _refusals.note(host, reason, "closing a connection from proxy %s: %s", host, reason)
            transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def proxy_gate(
    factory: Callable[[], asyncio.Protocol], *, proxy_from: Iterable[str], timeout_s: float
) -> Callable[[], asyncio.Protocol]:
    """A protocol factory reading PROXY headers from `proxy_from` before `factory`'s protocol."""
    trusted = TrustedProxies(proxy_from)

    def make() -> asyncio.Protocol:
        return ProxyGate(inner=factory(), trusted=trusted, timeout_s=timeout_s)

    return make
