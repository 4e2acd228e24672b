"""The connection sweeper looks only at connections whose deadline has come (a timer heap).

A tick costs what expires, not what exists: with many quiet connections inside their keepalive
nothing is looked at, while a silent client is still dropped at 1.5x its keepalive
(MQTT-3.1.2-24) and a socket without CONNECT at the CONNECT time-out.
"""

from __future__ import annotations

import time
import uuid

from mqim.server import EmbeddedServer
from tests.broker.conftest import RawFactory, ServerFactory, broker_of


async def test_a_tick_looks_only_at_what_is_due(tserver: EmbeddedServer, raw: RawFactory) -> None:
    broker = broker_of(tserver)
    tag = uuid.uuid4().hex[:8]
    quiet = [await raw(f"quiet-{tag}-{n}", keepalive=60) for n in range(200)]
    assert broker.connection_count >= 200
    # Each was connected just now: its next look is at its keepalive deadline, a minute away.
    assert broker.sweep_connections(time.monotonic()) == 0
    # 100 s on, every one of them is due once (and, silent, dropped).
    assert broker.sweep_connections(time.monotonic() + 100) >= 200
    for conn in quiet:
        assert await conn.closed_by_server(timeout=5)


async def test_a_short_keepalive_is_watched_from_the_connack(
    tserver: EmbeddedServer, raw: RawFactory
) -> None:
    # Not only at the CONNECT time-out (10 s): 1.5 x 1 s after its last packet.
    silent = await raw(f"silent-{uuid.uuid4().hex[:8]}", keepalive=1)
    started = time.monotonic()
    assert await silent.closed_by_server(timeout=6)
    assert time.monotonic() - started < 5


async def test_a_socket_without_connect_is_closed_at_the_time_out(
    make_server: ServerFactory, connect_raw: RawFactory
) -> None:
    server = await make_server(connect_timeout_s=1.0)
    idle = await connect_raw(server.port())  # no CONNECT
    started = time.monotonic()
    assert await idle.closed_by_server(timeout=6)
    assert time.monotonic() - started < 4
