"""MQTT 3.1.1 conformance of the mqim broker, by behaviour and by the spec statement it keeps.

Every test talks to a real server on a loopback port (raw sockets or paho). The behaviours of the
first sections are the ones stock amqtt 0.12.1 gets wrong (docs/architecture.md, "Departures from
DESIGN.md"); tests/broker/test_statements.py goes through the normative statements one by one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from mqim.acl import AclEngine, Identity, MembershipIndex, parse_rule
from mqim.broker import BrokerSettings, Listener
from mqim.broker._hub import Hub
from mqim.server import EmbeddedServer
from mqim.storage import AccountKind, SqliteStorage
from tests.broker.aioraw import (
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    AioRaw,
    Packet,
    ack,
)
from tests.broker.conftest import GENERIC_RULES, RawFactory, ServerFactory, broker_of, build_server
from tests.conftest import PASSWORD, Users, free_port
from tests.support.mqtt import Paho, Raw


def cid(topic: str, name: str) -> str:
    return f"{name}-{topic.removeprefix('t/')}"


def connack_code(packet: Packet | None) -> int:
    assert packet is not None, "closed without CONNACK"
    assert packet.type == 2, f"expected CONNACK, got {packet}"
    return packet.body[1]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def receive_all(
    conn: AioRaw, count: int, timeout: float = 10.0
) -> list[tuple[str, bytes, int, bool, bool]]:
    """Receive `count` PUBLISHes, acknowledging each; (topic, payload, qos, retain, dup)."""
    got = []
    for _ in range(count):
        pub = await conn.receive(timeout)
        if pub.qos == 1:
            assert pub.pid is not None
            conn.send(ack(PUBACK, pub.pid))
        elif pub.qos == 2:
            assert pub.pid is not None
            conn.send(ack(PUBREC, pub.pid))
            assert (await conn.expect(PUBREL)).pid == pub.pid
            conn.send(ack(PUBCOMP, pub.pid))
        got.append((pub.topic, pub.payload, pub.qos, pub.retain, pub.dup))
    return got


# == routing through an index: a publish costs the levels of its topic, not the subscriptions ====


class _Socket:
    """Stands in for a client socket: records what the hub writes to it."""

    writable = True

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


def _route_with_sessions(sessions: int) -> tuple[list[int], int]:
    hub = Hub(
        settings=BrokerSettings(),
        acl=AclEngine(rules=[parse_rule(GENERIC_RULES[1])], membership=MembershipIndex()),
        store=None,
    )
    sockets: list[_Socket] = []
    for n in range(sessions):
        session, _ = hub.open_session(
            client_id=f"c{n}", identity=Identity(user=f"u{n}", client_id=f"c{n}"), clean=True
        )
        sock = _Socket()
        hub.connected(session, sock)
        sockets.append(sock)
        hub.subscribe(session, f"t/u{n}/inbox", 1)
        hub.subscribe(session, f"t/u{n}/+/typing", 0)  # every user also holds a wildcard filter
    hub.route("t/u7/inbox", b"hello", 1)
    receivers = [n for n, sock in enumerate(sockets) if sock.data]
    return receivers, hub.index.last_visited


def test_routing_visits_only_the_branches_of_the_topic() -> None:
    small_receivers, small_cost = _route_with_sessions(10)
    large_receivers, large_cost = _route_with_sessions(5_000)
    assert small_receivers == large_receivers == [7]
    # The trie nodes visited are those on the topic's own path (root, t, u7 and its "+" branch),
    # the same with 10 or 5,000 other sessions: nothing scans the other users' filters.
    assert small_cost == large_cost == 4


@pytest.mark.slow
async def test_one_to_one_delivery_with_500_subscribed_sockets(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    # One test process is one source address and one anonymous publisher: rate limits off.
    server = await make_server(connect_rate_per_address=0.0, publish_rate=0.0)
    port = server.port()
    count = 500
    subscribers = await asyncio.gather(*(connect_raw(port, cid(topic, f"sub{n}")) for n in range(count)))
    codes = await asyncio.gather(*(s.subscribe(f"{topic}/{n}", 1) for n, s in enumerate(subscribers)))
    assert codes == [1] * count
    publisher = await connect_raw(port, cid(topic, "pub"))
    for n in range(count):
        await publisher.publish(f"{topic}/{n}", f"m{n}".encode(), qos=1, pid=n + 1)
    got = await asyncio.gather(*(receive_all(s, 1) for s in subscribers))
    assert got == [[(f"{topic}/{n}", f"m{n}".encode(), 1, False, False)] for n in range(count)]
    await asyncio.gather(*(s.nothing(0.3) for s in subscribers[:20]))


# == keepalive: a client silent for 1.5x its keepalive is dropped, its will published (MQTT-3.1.2-24)


async def test_silent_client_is_dropped_and_its_will_published(raw: RawFactory, topic: str) -> None:
    watcher = await raw(cid(topic, "watcher"))
    assert await watcher.subscribe(f"{topic}/will", 1) == 1
    silent = await raw(cid(topic, "silent"), keepalive=1, will=(f"{topic}/will", b"gone", 1, False))
    # MQTT-3.1.2-24: silent for 1.5 x keepalive -> disconnected; the will is published.
    assert await silent.closed_by_server(timeout=6)
    (will,) = await receive_all(watcher, 1, timeout=5)
    assert will[:3] == (f"{topic}/will", b"gone", 1)


async def test_pinging_client_with_short_keepalive_stays_connected(raw: RawFactory, topic: str) -> None:
    client = await raw(cid(topic, "pinger"), keepalive=1)
    for _ in range(8):
        client.send(PINGREQ)
        await client.expect(PINGRESP)
        await asyncio.sleep(0.4)
    await client.publish(f"{topic}/alive", b"x", qos=1)


# == unacknowledged deliveries are kept and resent with DUP on reconnect (MQTT-4.4.0-1) ==========


@pytest.mark.slow
async def test_unacked_qos1_is_kept_and_redelivered_with_dup(raw: RawFactory, topic: str) -> None:
    client_id = cid(topic, "slow-reader")
    reader = await raw(client_id, clean=False)
    assert await reader.subscribe(f"{topic}/q", 1) == 1
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/q", b"acked", qos=1, pid=1)
    await publisher.publish(f"{topic}/q", b"not-acked", qos=1, pid=2)
    first, second = await reader.receive(), await reader.receive()
    assert (first.payload, second.payload, second.dup) == (b"acked", b"not-acked", False)
    assert first.pid is not None
    assert second.pid is not None
    reader.send(ack(PUBACK, first.pid))
    # Stock amqtt gives up on an unacknowledged message after 5 s and forgets it.
    await reader.nothing(6.0)
    reader.reset()
    again = await raw(client_id, clean=False)
    # MQTT-4.4.0-1: resent on reconnect with DUP=1 and the same packet id; acked ones are not.
    redelivered = await again.receive()
    assert (redelivered.payload, redelivered.dup, redelivered.pid, redelivered.qos) == (
        b"not-acked",
        True,
        second.pid,
        1,
    )
    again.send(ack(PUBACK, second.pid))
    await again.nothing(0.5)
    again.send(DISCONNECT)
    third = await raw(client_id, clean=False)
    await third.nothing(0.5)  # acknowledged now: never sent again


async def test_inflight_at_disconnect_is_redelivered(raw: RawFactory, topic: str) -> None:
    client_id = cid(topic, "reader")
    reader = await raw(client_id, clean=False)
    await reader.subscribe(f"{topic}/q", 2)
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/q", b"q1", qos=1, pid=1)
    await publisher.publish(f"{topic}/q", b"q2", qos=2, pid=2)
    one, two = await reader.receive(), await reader.receive()
    reader.reset()  # in flight at disconnect: neither acknowledged
    again = await raw(client_id, clean=False)
    got = await receive_all(again, 2)
    assert got == [(f"{topic}/q", b"q1", 1, False, True), (f"{topic}/q", b"q2", 2, False, True)]
    await again.nothing(0.3)
    assert (one.qos, two.qos) == (1, 2)


# == delivery QoS is min(publish, granted) (MQTT-3.8.4-6), overlapping filters deliver once (MQTT-3.3.5-1)


@pytest.mark.parametrize(
    ("sub_qos", "pub_qos", "expected"), [(0, 1, 0), (2, 1, 1), (1, 2, 1), (2, 2, 2), (0, 2, 0)]
)
async def test_delivery_qos_is_the_minimum(
    raw: RawFactory, topic: str, sub_qos: int, pub_qos: int, expected: int
) -> None:
    subscriber = await raw(cid(topic, "sub"))
    assert await subscriber.subscribe(f"{topic}/q", sub_qos) == sub_qos
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/q", b"x", qos=pub_qos)
    assert await receive_all(subscriber, 1) == [(f"{topic}/q", b"x", expected, False, False)]


async def test_overlapping_subscriptions_deliver_once_at_max_qos(raw: RawFactory, topic: str) -> None:
    subscriber = await raw(cid(topic, "sub"))
    assert await subscriber.subscribe(f"{topic}/x/#", 0) == 0
    assert await subscriber.subscribe(f"{topic}/x/y", 1, pid=2) == 1
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/x/y", b"once", qos=1)
    assert await receive_all(subscriber, 1) == [(f"{topic}/x/y", b"once", 1, False, False)]
    await subscriber.nothing(0.5)
    await publisher.publish(f"{topic}/x/z", b"wide", qos=1)
    assert await receive_all(subscriber, 1) == [(f"{topic}/x/z", b"wide", 0, False, False)]


# == retained messages: sent on a new subscription only (MQTT-3.3.1-6), replayed with retain 0 (MQTT-3.3.1-9)


async def test_new_client_without_subscriptions_gets_no_retained(raw: RawFactory, topic: str) -> None:
    other = await raw(cid(topic, "other"))
    await other.subscribe(f"{topic}/r/#", 1)
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/r/1", b"kept", qos=1, retain=True)
    assert await receive_all(other, 1) == [(f"{topic}/r/1", b"kept", 1, False, False)]
    # Stock amqtt sends a new client the retained messages matching *other* sessions' filters.
    newcomer = await raw(cid(topic, "new"))
    await newcomer.nothing(0.7)
    await other.nothing(0.1)


async def test_retained_go_only_to_the_subscriber_for_its_new_filter(raw: RawFactory, topic: str) -> None:
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/r/1", b"one", qos=1, retain=True)
    await publisher.publish(f"{topic}/r/2", b"two", qos=1, retain=True)
    early = await raw(cid(topic, "early"))
    await early.subscribe(f"{topic}/r/#", 1)
    got = await receive_all(early, 2)
    assert sorted(got) == [(f"{topic}/r/1", b"one", 1, True, False), (f"{topic}/r/2", b"two", 1, True, False)]
    late = await raw(cid(topic, "late"))
    await late.subscribe(f"{topic}/r/2", 1)
    # MQTT-3.3.1-6: sent to the subscribing session, for the filter it just subscribed to.
    assert await receive_all(late, 1) == [(f"{topic}/r/2", b"two", 1, True, False)]
    await late.nothing(0.3)
    await early.nothing(0.1)


async def test_retained_on_a_topic_the_subscriber_may_not_receive_is_not_sent(
    raw: RawFactory, topic: str
) -> None:
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/secret/x", b"hidden", qos=1, retain=True)
    await publisher.publish(f"{topic}/open/x", b"visible", qos=1, retain=True)
    subscriber = await raw(cid(topic, "sub"))
    # `t/#` may be subscribed to, but `t/+/secret/#` is denied RECEIVE (see GENERIC_RULES).
    assert await subscriber.subscribe(f"{topic}/#", 1) == 1
    assert await receive_all(subscriber, 1) == [(f"{topic}/open/x", b"visible", 1, True, False)]
    await subscriber.nothing(0.5)


async def test_retained_im_message_not_sent_to_another_user(server: EmbeddedServer, users: Users) -> None:
    alice, bob = await users.add("alice"), await users.add("bob")
    broker_of(server).publish_local(f"im/v1/u/{bob}/event", b'{"v":1}', qos=1, retain=True)
    alice_c = await users.connected(alice)
    # Alice holds her inbox (auto-subscribed); a wildcard over every inbox is granted as her own
    # inbox only (its receive scope), so bob's retained event never reaches her.
    assert await alice_c.subscribe(f"im/v1/u/{alice}/#", 1) == 1
    assert await alice_c.subscribe("im/v1/u/+/event", 1) == 1
    assert await alice_c.subscribe(f"im/v1/u/{bob}/event", 1) == 0x80
    await alice_c.nothing(0.5)
    bob_c = await users.connected(bob)
    assert await bob_c.subscribe(f"im/v1/u/{bob}/event", 1) == 1
    got = await bob_c.receive_on("/event")
    assert (got.payload, got.retain) == (b'{"v":1}', True)


async def test_queued_messages_replay_with_retain_0(raw: RawFactory, topic: str) -> None:
    client_id = cid(topic, "sub")
    subscriber = await raw(client_id, clean=False)
    await subscriber.subscribe(f"{topic}/q", 1)
    subscriber.send(DISCONNECT)
    assert await subscriber.closed_by_server()
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/q", b"while-away", qos=1, retain=True)
    again = await raw(client_id, clean=False)
    # MQTT-3.3.1-9: a message matching an established subscription has RETAIN=0.
    assert await receive_all(again, 1) == [(f"{topic}/q", b"while-away", 1, False, False)]


# == invalid input closes the connection (MQTT-4.8.0-1) ==========================================


# `$` topics are valid names (acknowledged, see test_dollar_topics.py); these are not.
@pytest.mark.parametrize("bad_topic", ["", "t/+", "t/#", "t/a+b"])
@pytest.mark.parametrize("qos", [0, 1])
async def test_publish_to_invalid_topic_closes_the_connection(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, bad_topic: str, qos: int
) -> None:
    errors = broker_of(tserver).hub.counters.protocol_errors
    bad = await raw(cid(topic, "bad"))
    bad.send(Raw.publish_packet(bad_topic, b"x", qos=qos, pid=1))
    # Closed, not acknowledged (3.1.1 has no negative PUBACK; stock amqtt kept a zombie), and
    # counted (the log line is aggregated per source and reason, see _logsummary.py).
    assert await bad.read() is None
    assert broker_of(tserver).hub.counters.protocol_errors == errors + 1
    subscriber = await raw(cid(topic, "sub"))
    await subscriber.subscribe(f"{topic}/ok", 1)
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/ok", b"fine", qos=1)
    assert await receive_all(subscriber, 1) == [(f"{topic}/ok", b"fine", 1, False, False)]


@pytest.mark.parametrize("will_topic", ["t/#", "t/+/x", "$x/y", ""])
async def test_invalid_will_topic_is_refused_at_connect(raw: RawFactory, topic: str, will_topic: str) -> None:
    conn = await raw()
    conn.send(Raw.connect_packet(client_id=cid(topic, "w"), will=(will_topic, b"x", 0, False)))
    packet = await conn.read()
    if packet is not None:  # a refusal CONNACK is acceptable; an accepted session is not
        assert connack_code(packet) != 0
        assert await conn.read() is None
    await raw(cid(topic, "next"))


async def test_malformed_packet_after_connect_closes_only_that_connection(
    raw: RawFactory, topic: str
) -> None:
    bystander = await raw(cid(topic, "bystander"))
    await bystander.subscribe(f"{topic}/x", 0)
    for junk in (b"\x00\x00", b"\x60\x02\x00\x01", b"\x82\x03\x00\x01\x00", b"\xf0\x00"):
        bad = await raw(cid(topic, "bad"))
        bad.send(junk)
        assert await bad.closed_by_server()
    publisher = await raw(cid(topic, "pub"))
    await publisher.publish(f"{topic}/x", b"still-up", qos=1)
    assert await receive_all(bystander, 1) == [(f"{topic}/x", b"still-up", 0, False, False)]


# == connection slots are released whatever the CONNECT did ======================================


async def test_broken_connects_do_not_leak_connection_slots(
    connect_raw: RawFactory, make_server: ServerFactory, uid: Callable[[str], str]
) -> None:
    server = await make_server(max_connections=5)
    port = server.port()
    broker = broker_of(server)
    user = uid("slots")
    await server.storage.add_user(user, password=PASSWORD)
    half_connect = Raw.connect_packet(client_id="half", user=user, password=PASSWORD)[:7]

    async def garbage() -> None:
        conn = await connect_raw(port)
        conn.send(b"\xff\xfe garbage \x00\x01")
        assert await conn.closed_by_server()

    async def half_then_close() -> None:
        conn = await connect_raw(port)
        conn.send(half_connect)
        await asyncio.sleep(0.05)
        await conn.close()

    async def half_then_reset() -> None:
        conn = await connect_raw(port)
        conn.send(half_connect)
        await asyncio.sleep(0.05)
        conn.reset()

    async def bad_credentials() -> None:
        conn = await connect_raw(port)
        assert (await conn.connect("bad", user=user, password="wrong"))[1] in (4, 5)
        assert await conn.read() is None

    async def reset_at_once() -> None:
        (await connect_raw(port)).reset()

    async def connected_then_reset() -> None:
        conn = await connect_raw(port)
        await conn.connect(f"ok-{uuid.uuid4().hex[:6]}")
        conn.reset()

    async def oversized() -> None:
        conn = await connect_raw(port)
        conn.send(b"\x10\xff\xff\xff\x7f")  # a CONNECT announcing 256 MB
        assert await conn.closed_by_server()

    breakers = [
        garbage,
        half_then_close,
        half_then_reset,
        bad_credentials,
        reset_at_once,
        connected_then_reset,
        oversized,
    ]
    for n in range(30):
        await breakers[n % len(breakers)]()
    await eventually(lambda: broker.connection_count == 0)

    async def connect(name: str) -> tuple[AioRaw, int]:
        conn = await connect_raw(port)
        return conn, (await conn.connect(name))[1]

    for _round in range(2):
        clients = [await connect(f"c{n}-{uuid.uuid4().hex[:6]}") for n in range(5)]
        assert [rc for _, rc in clients] == [0] * 5
        extra, rc = await connect("sixth")
        assert rc == 3  # server unavailable
        assert await extra.read() is None
        for conn, _ in clients:
            conn.send(DISCONNECT)
            await conn.close()
        await eventually(lambda: broker.connection_count == 0)


# == durable, bounded session queues (MQTT-3.1.2-4) ==============================================


async def test_graceful_restart_keeps_offline_queue(
    connect_raw: RawFactory, tmp_path: Path, topic: str
) -> None:
    data = tmp_path / "data"
    client_id = cid(topic, "sub")
    count = 20
    async with build_server(data) as server:
        sub = await connect_raw(server.port())
        await sub.connect(client_id, clean=False)
        await sub.subscribe(f"{topic}/q", 1)
        sub.send(DISCONNECT)
        assert await sub.closed_by_server()
        pub = await connect_raw(server.port())
        await pub.connect(cid(topic, "pub"))
        for n in range(count):
            await pub.publish(f"{topic}/q", f"m{n}".encode(), qos=1, pid=n + 1)
        await pub.publish(f"{topic}/kept", b"retained", qos=1, retain=True)
        await pub.publish(f"{topic}/cleared", b"soon gone", qos=1, retain=True)
        await pub.publish(f"{topic}/cleared", b"", qos=1, retain=True)
        await pub.close()
    async with build_server(data) as server:
        sub = await connect_raw(server.port())
        assert await sub.connect(client_id, clean=False) == (True, 0)
        got = await receive_all(sub, count)
        assert got == [(f"{topic}/q", f"m{n}".encode(), 1, False, False) for n in range(count)]
        await sub.nothing(0.3)
        # The subscription survived too.
        pub = await connect_raw(server.port())
        await pub.connect(cid(topic, "pub"))
        await pub.publish(f"{topic}/q", b"after", qos=1)
        assert await receive_all(sub, 1) == [(f"{topic}/q", b"after", 1, False, False)]
        # Retained messages (and their clearing) survived as well.
        fresh = await connect_raw(server.port(), cid(topic, "fresh"))
        await fresh.subscribe(f"{topic}/+", 1)
        assert await receive_all(fresh, 1) == [(f"{topic}/kept", b"retained", 1, True, False)]
        await fresh.nothing(0.3)


async def test_in_flight_at_shutdown_is_delivered_after_restart(
    tmp_path: Path, connect_raw: RawFactory, topic: str
) -> None:
    data = tmp_path / "data"
    client_id = cid(topic, "sub")
    async with build_server(data) as server:
        sub = await connect_raw(server.port(), client_id, clean=False)
        await sub.subscribe(f"{topic}/q", 1)
        pub = await connect_raw(server.port(), cid(topic, "pub"))
        await pub.publish(f"{topic}/q", b"unacked", qos=1)
        assert (await sub.receive()).payload == b"unacked"  # never acknowledged
    async with build_server(data) as server:
        sub = await connect_raw(server.port())
        assert await sub.connect(client_id, clean=False) == (True, 0)
        (got,) = await receive_all(sub, 1)
        assert got[:4] == (f"{topic}/q", b"unacked", 1, False)
        await sub.nothing(0.3)


async def _start_serve(port: int, data: Path, log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mqim.cli",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            stdout=out,
            stderr=out,
            env=env,
        )
    deadline = time.monotonic() + 30
    while True:
        assert proc.returncode is None, "mqim serve exited; see its log"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, "mqim serve did not start; see its log"
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return proc


@pytest.mark.slow
async def test_kill_9_keeps_every_acknowledged_message(
    connect_raw: RawFactory, tmp_path: Path, uid: Callable[[str], str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    log = tmp_path / "serve.log"
    bob, svc = uid("bob"), uid("svc")
    async with SqliteStorage(path=data / "mqim.db") as storage:
        await storage.add_user(bob, password=PASSWORD)
        await storage.add_user(svc, password=PASSWORD, kind=AccountKind.SERVICE)
    port = free_port()
    count = 200
    proc = await _start_serve(port, data, log)
    try:
        reader = await connect_raw(port)
        assert await reader.connect("bob-phone", user=bob, password=PASSWORD, clean=False) == (False, 0)
        reader.send(DISCONNECT)  # offline; auto-subscribed to im/v1/u/{bob}/# at QoS 1
        assert await reader.closed_by_server()
        writer = await connect_raw(port)
        assert (await writer.connect("svc-1", user=svc, password=PASSWORD))[1] == 0
        for n in range(count):
            body = json.dumps({"v": 1, "id": f"m{n}"}).encode()
            writer.send(Raw.publish_packet(f"im/v1/u/{bob}/msg", body, qos=1, pid=n + 1))
        acked = {(await writer.expect(PUBACK)).pid for _ in range(count)}
        assert acked == set(range(1, count + 1))
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    proc = await _start_serve(port, data, log)
    try:
        reader = await connect_raw(port)
        assert await reader.connect("bob-phone", user=bob, password=PASSWORD, clean=False) == (True, 0)
        seen: set[str] = set()
        while len(seen) < count:
            pub = await reader.receive(timeout=10)
            assert pub.pid is not None
            reader.send(ack(PUBACK, pub.pid))
            if pub.topic.endswith("/msg"):
                seen.add(json.loads(pub.payload)["id"])  # the client dedups by id
        assert seen == {f"m{n}" for n in range(count)}
        await reader.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def test_bounded_queue_keeps_newest_and_tells_the_user_to_sync(
    connect_raw: RawFactory, make_server: ServerFactory, uid: Callable[[str], str], topic: str
) -> None:
    server = await make_server(max_queue_messages=5)
    bob = uid("bob")
    await server.storage.add_user(bob, password=PASSWORD)
    reader = await connect_raw(server.port())
    await reader.connect("bob-q", user=bob, password=PASSWORD, clean=False)
    assert await reader.subscribe(f"{topic}/q", 1) == 1
    reader.send(DISCONNECT)
    assert await reader.closed_by_server()
    writer = await connect_raw(server.port())
    await writer.connect(cid(topic, "pub"))
    for n in range(10):
        await writer.publish(f"{topic}/q", f"m{n}".encode(), qos=1, pid=n + 1)
    reader = await connect_raw(server.port())
    assert await reader.connect("bob-q", user=bob, password=PASSWORD, clean=False) == (True, 0)
    got = await receive_all(reader, 6)
    await reader.nothing(0.5)
    messages = [payload for t, payload, *_ in got if t == f"{topic}/q"]
    events = [json.loads(payload) for t, payload, *_ in got if t == f"im/v1/u/{bob}/event"]
    assert messages == [f"m{n}".encode() for n in range(5, 10)]
    assert len(events) == 1
    assert (events[0]["type"], events[0]["action"]) == ("queue_overflow", "sync")
    assert events[0]["dropped"] >= 1  # how many had left when the notice was written


async def test_session_expires(connect_raw: RawFactory, tmp_path: Path, topic: str) -> None:
    data = tmp_path / "data"
    client_id = cid(topic, "sub")
    async with build_server(data, session_expiry_s=60) as server:
        hub = broker_of(server).hub
        sub = await connect_raw(server.port())
        assert await sub.connect(client_id, clean=False) == (False, 0)
        await sub.subscribe(f"{topic}/q", 1)
        sub.send(DISCONNECT)
        assert await sub.closed_by_server()
        await eventually(lambda: hub.sessions[client_id].conn is None)
        assert hub.expire_sessions(time.time()) == 0  # not yet
        sub = await connect_raw(server.port())
        assert await sub.connect(client_id, clean=False) == (True, 0)
        sub.send(DISCONNECT)
        assert await sub.closed_by_server()
        await eventually(lambda: hub.sessions[client_id].conn is None)
        pub = await connect_raw(server.port())
        await pub.connect(cid(topic, "pub"))
        await pub.publish(f"{topic}/q", b"lost with the session", qos=1)
        await pub.close()
        assert hub.expire_sessions(time.time() + 61) == 1
    async with build_server(data, session_expiry_s=60) as server:
        sub = await connect_raw(server.port())
        # Forgotten durably too: no session, no subscription, no queue after a restart.
        assert await sub.connect(client_id, clean=False) == (False, 0)
        await sub.nothing(0.3)
        pub = await connect_raw(server.port())
        await pub.connect(cid(topic, "pub"))
        await pub.publish(f"{topic}/q", b"nobody listens", qos=1)
        await sub.nothing(0.3)
        await pub.close()
        await sub.close()


# == subscription ACL: a filter is granted only within a rule (subset) ===========================


async def test_plus_rule_does_not_grant_hash(
    connect_raw: RawFactory, make_server: ServerFactory, topic: str
) -> None:
    # A `+` rule never delivers what `#` would: wider filters are granted as their intersection
    # with `t/a/+` (issue 12, receive scopes), a filter outside it is refused.
    server = await make_server(rules=["allow all subscribe,receive t/a/+", "allow all publish t/#"])
    conn = await connect_raw(server.port())
    await conn.connect(cid(topic, "acl"))
    assert await conn.subscribe("t/a/x/y", 1, pid=4) == 0x80
    assert await conn.subscribe("t/b/#", 1, pid=8) == 0x80
    assert await conn.subscribe("t/a/#", 1, pid=1) == 1
    assert await conn.subscribe("t/#", 1, pid=2) == 1
    assert await conn.subscribe("+/a/x", 1, pid=3) == 1
    await conn.publish("t/a/x/y", b"deeper", qos=1, pid=7)
    await conn.publish("t/a", b"parent", qos=1, pid=9)
    await conn.publish("t/b/x", b"beside", qos=1, pid=10)
    await conn.publish("t/a/x", b"granted", qos=1, pid=11)
    assert await receive_all(conn, 1) == [("t/a/x", b"granted", 1, False, False)]
    await conn.nothing(0.3)
    await conn.close()


# == named limits ===============================================================================


async def test_publish_over_max_packet_bytes_is_discarded_and_acknowledged(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    server = await make_server(max_packet_bytes=1024, max_publish_discard_bytes=1 << 20)
    port = server.port()
    sub = await connect_raw(port, cid(topic, "sub"))
    await sub.subscribe(f"{topic}/big", 1)
    big = await connect_raw(port, cid(topic, "big"))
    await big.publish(f"{topic}/big", b"x" * 900, qos=1)
    assert await receive_all(sub, 1) == [(f"{topic}/big", b"x" * 900, 1, False, False)]
    # Sent in small pieces: the broker streams it through and keeps only its head.
    packet = Raw.publish_packet(f"{topic}/big", b"y" * 500_000, qos=1, pid=7)
    for start in range(0, len(packet), 4096):
        big.send(packet[start : start + 4096])
    assert (await big.expect(PUBACK)).pid == 7  # acknowledged, so the client's store moves on
    await big.publish(f"{topic}/big", b"after", qos=1, pid=8)  # the connection stays usable
    assert await receive_all(sub, 1) == [(f"{topic}/big", b"after", 1, False, False)]
    assert broker_of(server).hub.counters.oversize_discarded == 1


async def test_publish_over_the_discard_bound_closes_the_connection(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    server = await make_server(max_packet_bytes=1024, max_publish_discard_bytes=4096)
    big = await connect_raw(server.port(), cid(topic, "big"))
    big.send(Raw.publish_packet(f"{topic}/big", b"x" * 5000, qos=1)[:50])  # header says 5000+
    assert await big.read() is None


async def test_other_packets_over_max_packet_bytes_close_the_connection(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    server = await make_server(max_packet_bytes=1024)
    big = await connect_raw(server.port(), cid(topic, "big"))
    big.send(Raw.subscribe_packet(f"{topic}/" + "s" * 2000, 1, 1)[:50])
    assert await big.read() is None


async def test_inflight_window_limits_unacknowledged_deliveries(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    server = await make_server(max_inflight=3)
    port = server.port()
    sub = await connect_raw(port, cid(topic, "sub"))
    await sub.subscribe(f"{topic}/w", 1)
    pub = await connect_raw(port, cid(topic, "pub"))
    for n in range(6):
        await pub.publish(f"{topic}/w", f"m{n}".encode(), qos=1, pid=n + 1)
    window = [await sub.receive() for _ in range(3)]
    await sub.nothing(0.3)  # the window is full: the rest waits in the session queue
    assert window[0].pid is not None
    sub.send(ack(PUBACK, window[0].pid))
    assert (await sub.receive()).payload == b"m3"
    await sub.nothing(0.2)
    for pub_packet in window[1:]:
        assert pub_packet.pid is not None
        sub.send(ack(PUBACK, pub_packet.pid))
    assert [p for _, p, *_ in await receive_all(sub, 2)] == [b"m4", b"m5"]


async def test_per_listener_connection_limit(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    server = await make_server(
        listeners=[Listener(name="default", port=0), Listener(name="small", port=0, max_connections=2)]
    )
    small = server.port("small")
    for n in range(2):
        await connect_raw(small, cid(topic, f"s{n}"))
    extra = await connect_raw(small)
    assert await extra.connect(cid(topic, "s-extra")) == (False, 3)
    await connect_raw(server.port(), cid(topic, "other-listener"))  # the other listener is not full


# == ordinary MQTT 3.1.1 ========================================================================


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_pubsub_with_paho(paho: Callable[..., Paho], topic: str, qos: int) -> None:
    sub = paho(cid(topic, "sub"))
    await sub.connect()
    assert await sub.subscribe(f"{topic}/p", qos) == qos
    pub = paho(cid(topic, "pub"))
    await pub.connect()
    for n in range(3):
        await pub.publish(f"{topic}/p", f"m{n}", qos=qos)
    got = [await sub.receive() for _ in range(3)]
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        (f"{topic}/p", f"m{n}".encode(), qos, False) for n in range(3)
    ]


async def test_qos2_resend_with_dup_is_routed_once(raw: RawFactory, topic: str) -> None:
    sub = await raw(cid(topic, "sub"))
    await sub.subscribe(f"{topic}/q2", 2)
    pub = await raw(cid(topic, "pub"))
    pub.send(Raw.publish_packet(f"{topic}/q2", b"once", qos=2, pid=7))
    assert (await pub.expect(PUBREC)).pid == 7
    pub.send(Raw.publish_packet(f"{topic}/q2", b"once", qos=2, pid=7, dup=True))
    assert (await pub.expect(PUBREC)).pid == 7
    pub.send(ack(PUBREL, 7))
    assert (await pub.expect(PUBCOMP)).pid == 7
    assert await receive_all(sub, 1) == [(f"{topic}/q2", b"once", 2, False, False)]
    await sub.nothing(0.5)
    # After PUBCOMP the packet id is free: the same id now carries a new message.
    await pub.publish(f"{topic}/q2", b"new", qos=2, pid=7)
    assert await receive_all(sub, 1) == [(f"{topic}/q2", b"new", 2, False, False)]


async def test_qos2_exactly_once_across_a_reconnect(raw: RawFactory, topic: str) -> None:
    sub = await raw(cid(topic, "sub"))
    await sub.subscribe(f"{topic}/q2", 2)
    client_id = cid(topic, "pub")
    pub = await raw(client_id, clean=False)
    pub.send(Raw.publish_packet(f"{topic}/q2", b"once", qos=2, pid=11))
    assert (await pub.expect(PUBREC)).pid == 11
    pub.reset()  # lost before PUBREL: the client resends the PUBLISH with DUP on its session
    again = await raw(client_id, clean=False)
    again.send(Raw.publish_packet(f"{topic}/q2", b"once", qos=2, pid=11, dup=True))
    assert (await again.expect(PUBREC)).pid == 11
    again.send(ack(PUBREL, 11))
    assert (await again.expect(PUBCOMP)).pid == 11
    assert await receive_all(sub, 1) == [(f"{topic}/q2", b"once", 2, False, False)]
    await sub.nothing(0.5)


async def test_qos2_pubrel_resend_is_completed_again(raw: RawFactory, topic: str) -> None:
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/q2", b"x", qos=2, pid=3)
    pub.send(ack(PUBREL, 3))  # a resent PUBREL (MQTT-4.3.3): answered, nothing else happens
    assert (await pub.expect(PUBCOMP)).pid == 3


async def test_retained_set_replace_and_clear(raw: RawFactory, topic: str) -> None:
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/r", b"v1", qos=1, retain=True)
    await pub.publish(f"{topic}/r", b"v2", qos=1, retain=True)
    first = await raw(cid(topic, "first"))
    await first.subscribe(f"{topic}/r", 1)
    assert await receive_all(first, 1) == [(f"{topic}/r", b"v2", 1, True, False)]
    await pub.publish(f"{topic}/r", b"", qos=1, retain=True)  # MQTT-3.3.1-10: clears it
    # The clearing message still reaches established subscribers (MQTT-3.3.1-11 aside, it is
    # an ordinary PUBLISH for them), with RETAIN=0.
    assert await receive_all(first, 1) == [(f"{topic}/r", b"", 1, False, False)]
    second = await raw(cid(topic, "second"))
    await second.subscribe(f"{topic}/r", 1)
    await second.nothing(0.5)


async def test_resubscribe_replaces_qos_and_resends_retained(raw: RawFactory, topic: str) -> None:
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/r", b"kept", qos=1, retain=True)
    sub = await raw(cid(topic, "sub"))
    await sub.subscribe(f"{topic}/r", 0)
    assert await receive_all(sub, 1) == [(f"{topic}/r", b"kept", 0, True, False)]
    # MQTT-3.8.4-3: the new subscription replaces the old one; retained messages are re-sent.
    await sub.subscribe(f"{topic}/r", 1, pid=2)
    assert await receive_all(sub, 1) == [(f"{topic}/r", b"kept", 1, True, False)]
    await pub.publish(f"{topic}/r", b"live", qos=1)
    assert await receive_all(sub, 1) == [(f"{topic}/r", b"live", 1, False, False)]
    await sub.nothing(0.3)


async def test_retained_qos_is_downgraded_to_the_subscription(raw: RawFactory, topic: str) -> None:
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/r", b"r", qos=2, retain=True)
    sub = await raw(cid(topic, "sub"))
    await sub.subscribe(f"{topic}/r", 0)
    assert await receive_all(sub, 1) == [(f"{topic}/r", b"r", 0, True, False)]


async def test_will_on_abrupt_close_not_on_disconnect(raw: RawFactory, topic: str) -> None:
    watcher = await raw(cid(topic, "watcher"))
    await watcher.subscribe(f"{topic}/will/#", 1)
    polite = await raw(cid(topic, "polite"), will=(f"{topic}/will/polite", b"p", 1, False))
    polite.send(DISCONNECT)
    assert await polite.closed_by_server()
    rude = await raw(cid(topic, "rude"), will=(f"{topic}/will/rude", b"r", 1, False))
    rude.reset()
    assert await receive_all(watcher, 1) == [(f"{topic}/will/rude", b"r", 1, False, False)]
    await watcher.nothing(0.5)


async def test_retained_will(tserver: EmbeddedServer, raw: RawFactory, topic: str) -> None:
    gone = await raw(cid(topic, "gone"), will=(f"{topic}/status", b"offline", 1, True))
    gone.reset()
    await eventually(lambda: f"{topic}/status" in broker_of(tserver).hub.retained)
    late = await raw(cid(topic, "late"))
    await late.subscribe(f"{topic}/status", 1)
    assert await receive_all(late, 1) == [(f"{topic}/status", b"offline", 1, True, False)]


async def test_unsubscribe_stops_delivery(raw: RawFactory, topic: str) -> None:
    sub = await raw(cid(topic, "sub"))
    await sub.subscribe(f"{topic}/u", 1)
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/u", b"before", qos=1)
    assert await receive_all(sub, 1) == [(f"{topic}/u", b"before", 1, False, False)]
    await sub.unsubscribe(f"{topic}/u", pid=9)
    await sub.unsubscribe(f"{topic}/never", pid=10)  # unknown filters are acknowledged too
    await pub.publish(f"{topic}/u", b"after", qos=1)
    await sub.nothing(0.5)


async def test_zero_length_client_id(raw: RawFactory) -> None:
    conn = await raw()
    assert await conn.connect("", clean=True) == (False, 0)
    await conn.publish("t/anon/x", b"x", qos=1)
    refused = await raw()
    # MQTT-3.1.3-8: an empty client id with clean_session=0 gets CONNACK 2, then the close.
    assert await refused.connect("", clean=False) == (False, 2)
    assert await refused.read() is None


async def test_dollar_topics_are_not_matched_by_leading_wildcards(
    connect_raw: RawFactory, make_server: ServerFactory, topic: str
) -> None:
    server = await make_server(
        rules=["allow all publish,subscribe,receive #", "allow all subscribe,receive $SYS/#"], builtin=False
    )
    port = server.port()
    everything, plus, sys_sub = conns = [await connect_raw(port) for _ in range(3)]
    for n, conn in enumerate(conns):
        await conn.connect(cid(topic, f"c{n}"))
    assert await everything.subscribe("#", 0) == 0
    assert await plus.subscribe("+/x", 0) == 0
    assert await sys_sub.subscribe("$SYS/#", 0) == 0
    broker_of(server).publish_local("$SYS/x", b"sys", qos=0)
    broker_of(server).publish_local("t/x", b"plain", qos=0)
    # MQTT-4.7.2-1: "#" and "+/x" do not match "$SYS/x"; "$SYS/#" does.
    assert await receive_all(everything, 1) == [("t/x", b"plain", 0, False, False)]
    assert await receive_all(plus, 1) == [("t/x", b"plain", 0, False, False)]
    assert await receive_all(sys_sub, 1) == [("$SYS/x", b"sys", 0, False, False)]
    for conn in conns:
        await conn.nothing(0.3)
        await conn.close()


async def test_session_present_flag(raw: RawFactory, topic: str) -> None:
    client_id = cid(topic, "sp")

    async def session_present(clean: bool) -> bool:
        conn = await raw()
        present, rc = await conn.connect(client_id, clean=clean)
        assert rc == 0
        conn.send(DISCONNECT)
        assert await conn.closed_by_server()
        return present

    assert await session_present(clean=False) is False  # new
    assert await session_present(clean=False) is True  # resumed
    assert await session_present(clean=True) is False  # clean: discarded (MQTT-3.2.2-1)
    assert await session_present(clean=False) is False  # ... so nothing to resume
    assert await session_present(clean=False) is True


async def test_client_id_takeover(raw: RawFactory, topic: str) -> None:
    watcher = await raw(cid(topic, "watcher"))
    await watcher.subscribe(f"{topic}/#", 1)
    client_id = cid(topic, "dup")
    first = await raw(client_id, will=(f"{topic}/will", b"first-gone", 1, False))
    second = await raw(client_id)
    # MQTT-3.1.4-2: the existing connection is closed; its will is published (not a DISCONNECT).
    assert await first.closed_by_server()
    assert await receive_all(watcher, 1) == [(f"{topic}/will", b"first-gone", 1, False, False)]
    await second.publish(f"{topic}/x", b"second-works", qos=1)
    assert await receive_all(watcher, 1) == [(f"{topic}/x", b"second-works", 1, False, False)]


async def test_persistent_takeover_keeps_the_queue(raw: RawFactory, topic: str) -> None:
    client_id = cid(topic, "dup")
    first = await raw(client_id, clean=False)
    await first.subscribe(f"{topic}/q", 1)
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/q", b"in-flight", qos=1)
    unacked = await first.receive()
    second = await raw()
    assert await second.connect(client_id, clean=False) == (True, 0)
    assert await first.closed_by_server()
    assert await receive_all(second, 1) == [(f"{topic}/q", b"in-flight", 1, False, True)]
    assert unacked.dup is False


async def test_second_connect_closes_the_connection(raw: RawFactory, topic: str) -> None:
    conn = await raw(cid(topic, "twice"))
    conn.send(Raw.connect_packet(client_id=cid(topic, "twice")))
    # MQTT-3.1.0-2: a second CONNECT is a protocol violation.
    assert await conn.read() is None


async def test_first_packet_must_be_connect(raw: RawFactory, topic: str) -> None:
    conn = await raw()
    conn.send(Raw.subscribe_packet(f"{topic}/x", 1))
    assert await conn.read() is None


async def test_unsupported_protocol_level_gets_connack_1(raw: RawFactory, topic: str) -> None:
    conn = await raw()
    conn.send(Raw.connect_packet(client_id=cid(topic, "v5"), level=5))
    packet = await conn.read()
    assert connack_code(packet) == 1
    assert await conn.read() is None


async def test_client_id_of_another_user_is_refused(
    connect_raw: RawFactory, tusers: Users, topic: str
) -> None:
    alice, mallory = await tusers.add("alice"), await tusers.add("mallory")
    port = tusers.server.port()
    owner = await connect_raw(port)
    client_id = cid(topic, "shared")
    assert await owner.connect(client_id, user=alice, password=PASSWORD, clean=False) == (False, 0)
    thief = await connect_raw(port)
    assert await thief.connect(client_id, user=mallory, password=PASSWORD, clean=False) == (False, 2)
    assert await thief.read() is None
    # The owner was not kicked.
    await owner.subscribe(f"{topic}/x", 1)
    await owner.publish(f"{topic}/x", b"still-mine", qos=1, pid=2)
    assert await receive_all(owner, 1) == [(f"{topic}/x", b"still-mine", 1, False, False)]
    owner.send(DISCONNECT)
    assert await owner.closed_by_server()
    thief = await connect_raw(port)
    # Not even while the owner is offline: the persistent session and its queue are alice's.
    assert await thief.connect(client_id, user=mallory, password=PASSWORD, clean=True) == (False, 2)
    await thief.close()


async def test_publish_denied_by_acl_is_acknowledged_and_dropped(raw: RawFactory, topic: str) -> None:
    watcher = await raw(cid(topic, "watcher"))
    await watcher.subscribe(f"{topic}/secret/#", 1)  # may subscribe, may not receive
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/secret/x", b"hidden", qos=1)
    await pub.publish("other/x", b"outside t/", qos=1)  # not allowed to publish: PUBACK, dropped
    await watcher.nothing(0.5)


async def test_pingreq(raw: RawFactory, topic: str) -> None:
    conn = await raw(cid(topic, "ping"))
    conn.send(PINGREQ)
    assert (await conn.expect(PINGRESP)).body == b""


async def test_many_packets_in_one_segment(raw: RawFactory, topic: str) -> None:
    sub = await raw(cid(topic, "sub"))
    await sub.subscribe(f"{topic}/burst", 1)
    conn = await raw()
    burst = Raw.connect_packet(client_id=cid(topic, "burst")) + b"".join(
        Raw.publish_packet(f"{topic}/burst", f"{n}".encode(), qos=1, pid=n + 1) for n in range(50)
    )
    conn.send(burst)  # CONNECT and 50 PUBLISHes before the CONNACK arrives
    packet = await conn.read()
    assert connack_code(packet) == 0
    assert [(await conn.expect(PUBACK)).pid for _ in range(50)] == list(range(1, 51))
    got = await receive_all(sub, 50)
    assert [payload for _, payload, *_ in got] == [f"{n}".encode() for n in range(50)]
