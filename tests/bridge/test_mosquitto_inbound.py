"""A real Mosquitto bridging into mqim with its default bridge settings (try_private, notifications)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mqim.server import EmbeddedServer
from mqim.storage import AccountKind
from tests.bridge.conftest import (
    MosquittoFactory,
    bridge_config,
    bridge_session,
    bridge_state,
    eventually,
    mqim_server,
)
from tests.bridge.mosquitto import Mosquitto
from tests.conftest import PASSWORD, free_port
from tests.support.mqtt import Paho

NAME = "plant7"
RULES = [
    f"allow user:reader subscribe,receive bridge/{NAME}/#",
    f"allow user:writer publish bridge/{NAME}/#",
]


async def _accounts(server: EmbeddedServer) -> None:
    await server.storage.add_user(NAME, password="bridge-pw", kind=AccountKind.BRIDGE)
    for user in ("reader", "writer"):
        await server.storage.add_user(user, password=PASSWORD)


async def _bridged(
    server: EmbeddedServer, mosquitto_factory: MosquittoFactory, extra: str = ""
) -> tuple[Mosquitto, Paho]:
    """Start Mosquitto bridged to `server`; wait until the bridge is connected and subscribed."""
    config = bridge_config(
        name=NAME, port=server.port(), user=NAME, password="bridge-pw", topic=f"bridge/{NAME}/# both 1"
    )
    mosq = await mosquitto_factory(extra=config + extra)
    await eventually(lambda: bridge_session(server, NAME), what=f"bridge session\n{mosq.log_text()}")
    await eventually(lambda: bridge_state(server, NAME) == "1", what="bridge notice")
    return mosq, Paho(port=mosq.port, user=None, client_id="edge-client")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedServer]:
    async with mqim_server(tmp_path / "mqim", free_port(), rules=RULES) as srv:
        await _accounts(srv)
        yield srv


async def test_bridge_session_is_flagged_and_notice_recorded(
    server: EmbeddedServer, mosquitto_factory: MosquittoFactory
) -> None:
    await _bridged(server, mosquitto_factory)
    session = bridge_session(server, NAME)
    assert session.is_bridge
    assert session.identity.kind == "bridge"
    assert session.persistent  # Mosquitto's default cleansession false
    assert set(session.subscriptions) == {f"bridge/{NAME}/#"}


@pytest.mark.parametrize("try_private", [True, False])
async def test_messages_cross_both_ways_without_echo(
    server: EmbeddedServer, mosquitto_factory: MosquittoFactory, try_private: bool
) -> None:
    # With try_private false the CONNECT is a plain level 4: the bridge account still makes it a
    # bridge session, so it is not echoed either.
    _, edge = await _bridged(server, mosquitto_factory, extra="" if try_private else "try_private false\n")
    assert bridge_session(server, NAME).is_bridge
    await edge.connect()
    await edge.subscribe(f"bridge/{NAME}/#", qos=1)
    reader = Paho(port=server.port(), user="reader", password=PASSWORD, client_id="reader-1")
    writer = Paho(port=server.port(), user="writer", password=PASSWORD, client_id="writer-1")
    try:
        await reader.connect()
        assert await reader.subscribe(f"bridge/{NAME}/#", qos=1) == 1
        await writer.connect()

        # Mosquitto -> mqim: exactly one copy on each side (none echoed back to Mosquitto).
        await edge.publish(f"bridge/{NAME}/temp", b"21.5", qos=1)
        got = await reader.receive()
        assert (got.topic, got.payload, got.qos) == (f"bridge/{NAME}/temp", b"21.5", 1)
        own = await edge.receive()
        assert own.payload == b"21.5"
        await edge.nothing(1.0)
        await reader.nothing(0.2)

        # mqim -> Mosquitto: exactly one copy on each side (none echoed back to mqim).
        await writer.publish(f"bridge/{NAME}/cmd/valve", b"close", qos=1)
        got = await edge.receive()
        assert (got.topic, got.payload) == (f"bridge/{NAME}/cmd/valve", b"close")
        own = await reader.receive()
        assert own.payload == b"close"
        await reader.nothing(1.0)
        await edge.nothing(0.2)
    finally:
        for client in (edge, reader, writer):
            client.close()


async def test_retained_flags_survive_both_ways(
    server: EmbeddedServer, mosquitto_factory: MosquittoFactory
) -> None:
    _, edge = await _bridged(server, mosquitto_factory)
    await edge.connect()
    writer = Paho(port=server.port(), user="writer", password=PASSWORD, client_id="writer-2")
    await writer.connect()
    try:
        # Retained on Mosquitto -> retained in mqim.
        await edge.publish(f"bridge/{NAME}/state", b"running", qos=1, retain=True)
        broker = server.broker
        assert broker is not None
        await eventually(lambda: f"bridge/{NAME}/state" in broker.hub.retained, what="retained in mqim")
        late = Paho(port=server.port(), user="reader", password=PASSWORD, client_id="reader-late")
        await late.connect()
        await late.subscribe(f"bridge/{NAME}/state", qos=1)
        got = await late.receive()
        assert (got.payload, got.retain) == (b"running", True)
        late.close()

        # Retained in mqim -> retained on Mosquitto (the bridge gets retain-as-published).
        await writer.publish(f"bridge/{NAME}/setpoint", b"42", qos=1, retain=True)
        mosq_port = edge.port

        async def retained_on_mosquitto() -> bool:
            probe = Paho(port=mosq_port, user=None, client_id="probe")
            await probe.connect()
            await probe.subscribe(f"bridge/{NAME}/setpoint", qos=1)
            try:
                got = await probe.receive(timeout=1.0)
            except AssertionError:
                return False
            finally:
                probe.close()
            assert got.payload == b"42"
            return got.retain

        for _ in range(20):
            if await retained_on_mosquitto():
                break
        else:
            raise AssertionError("the retained message never became retained on Mosquitto")
    finally:
        edge.close()
        writer.close()


async def test_killed_mosquitto_leaves_a_disconnected_notice(
    server: EmbeddedServer, mosquitto_factory: MosquittoFactory
) -> None:
    mosq, _ = await _bridged(server, mosquitto_factory)
    session = bridge_session(server, NAME)
    # Mosquitto dies without DISCONNECT: its will ("0" on the notice topic) is recorded as status.
    await mosq.stop(kill=True)
    await eventually(lambda: bridge_state(server, NAME) == "0", what="disconnected notice")
    assert session.conn is None


async def test_bridge_account_is_confined_to_its_namespace(server: EmbeddedServer) -> None:
    assert server.broker is not None
    routed: list[str] = []
    detach = server.broker.attach_listener("#", lambda topic, payload: routed.append(topic))
    client = Paho(port=server.port(), user=NAME, password="bridge-pw", client_id="confined")
    try:
        await client.connect()
        for outside in ("bridge/other/#", "im/v1/u/reader/#", "other/x"):
            assert await client.subscribe(outside, qos=1) == 0x80, outside
        # Wider filters are granted as their intersection with the namespace (DESIGN.md section
        # 8): they deliver only bridge/{NAME}/... (checked below: nothing else reaches it).
        for wide in ("#", "bridge/#", "bridge/+/x"):
            assert await client.subscribe(wide, qos=1) == 1, wide
        assert await client.subscribe(f"bridge/{NAME}/#", qos=1) == 1
        for outside in ("bridge/other/x", "im/v1/up/reader/msg", "other/x", f"bridge/{NAME}x/y"):
            await client.publish(outside, b"{}", qos=1)
        await client.publish(f"bridge/{NAME}/inside", b"ok", qos=1)
        await eventually(lambda: routed, what="the allowed message")
        assert routed == [f"bridge/{NAME}/inside"]
        # A bridge never gets its own messages back, even with a matching subscription.
        await client.nothing(0.3)
    finally:
        detach()
        client.close()


async def test_mosquitto_bridge_topics_outside_the_namespace_go_nowhere(
    server: EmbeddedServer, mosquitto_factory: MosquittoFactory
) -> None:
    assert server.broker is not None
    routed: list[str] = []
    detach = server.broker.attach_listener("#", lambda topic, payload: routed.append(topic))
    try:
        # The Mosquitto side asks for more than its namespace; mqim refuses the extra filter and
        # drops what it publishes there.
        _, edge = await _bridged(server, mosquitto_factory, extra="topic other/# both 1\n")
        assert "other/#" not in bridge_session(server, NAME).subscriptions
        await edge.connect()
        await edge.publish("other/x", b"no", qos=1)
        await edge.publish(f"bridge/{NAME}/y", b"yes", qos=1)
        await eventually(lambda: f"bridge/{NAME}/y" in routed, what="the allowed message")
        assert "other/x" not in routed
        edge.close()
    finally:
        detach()


@pytest.mark.slow
async def test_qos1_streams_survive_mosquitto_and_mqim_restarts(
    tmp_path: Path, mosquitto_factory: MosquittoFactory
) -> None:
    """Persistent sessions on both sides: nothing published with QoS 1 is lost across restarts."""
    port = free_port()
    data_dir = tmp_path / "mqim-restart"
    config = bridge_config(
        name=NAME,
        port=port,
        user=NAME,
        password="bridge-pw",
        topic=f"bridge/{NAME}/# both 1",
        # Not a bridge default, only to keep the test short: reconnect 1 s after a drop.
        extra="restart_timeout 1\n",
    )
    server = mqim_server(data_dir, port, rules=RULES)
    await server.__aenter__()
    try:
        await _accounts(server)
        mosq = await mosquitto_factory(extra=config, persistence=True)
        await eventually(lambda: bridge_session(server, NAME), what="bridge session")
        # Readers with persistent sessions on each side; paho reconnects them by itself.
        mqim_reader = Paho(
            port=port, user="reader", password=PASSWORD, client_id="reader-p", clean_session=False
        )
        await mqim_reader.connect()
        await mqim_reader.subscribe(f"bridge/{NAME}/up", qos=1)
        mosq_reader = Paho(port=mosq.port, user=None, client_id="mosq-reader", clean_session=False)
        await mosq_reader.connect()
        await mosq_reader.subscribe(f"bridge/{NAME}/down", qos=1)

        async def up(numbers: range) -> None:  # Mosquitto -> mqim
            edge = Paho(port=mosq.port, user=None, client_id="edge-pub")
            await edge.connect()
            for n in numbers:
                await edge.publish(f"bridge/{NAME}/up", str(n).encode(), qos=1)
            edge.close()

        async def down(numbers: range) -> None:  # mqim -> Mosquitto
            writer = Paho(port=port, user="writer", password=PASSWORD, client_id="writer-p")
            await writer.connect()
            for n in numbers:
                await writer.publish(f"bridge/{NAME}/down", str(n).encode(), qos=1)
            writer.close()

        async def restart_mqim() -> EmbeddedServer:
            await server.__aexit__(None, None, None)
            restarted = mqim_server(data_dir, port, rules=RULES)
            await restarted.__aenter__()
            return restarted

        await up(range(0, 10))
        await down(range(0, 10))
        # Mosquitto goes away: mqim queues for the bridge's persistent session meanwhile...
        await mosq.stop()
        await down(range(10, 20))
        # ...also across an mqim restart (the restored session keeps its bridge rights).
        server = await restart_mqim()
        await down(range(20, 30))
        await mosq.start()
        await eventually(lambda: bridge_session(server, NAME), timeout=30, what="bridge back")
        await up(range(10, 30))
        # mqim goes away: Mosquitto queues for its bridge meanwhile.
        await server.__aexit__(None, None, None)
        await up(range(30, 40))
        server = mqim_server(data_dir, port, rules=RULES)
        await server.__aenter__()
        await eventually(lambda: bridge_session(server, NAME), timeout=30, what="bridge back")
        await down(range(30, 40))

        async def collect(reader: Paho, want: set[str]) -> set[str]:
            seen: set[str] = set()
            for _ in range(200):
                if want <= seen:
                    break
                seen.add((await reader.receive(timeout=20)).payload.decode())
            return seen

        want = {str(n) for n in range(40)}
        assert await collect(mqim_reader, want) == want
        assert await collect(mosq_reader, want) == want
        mqim_reader.close()
        mosq_reader.close()
    finally:
        await server.__aexit__(None, None, None)
