"""Protocol violations close the connection (MQTT-4.8.0-1), counted, one aggregated log line.

Raw sockets send what client libraries refuse to: malformed filters, QoS 0 with DUP=1, and
acknowledgements that do not fit the QoS flow of the delivery they name.
"""

from __future__ import annotations

import struct

import pytest

from mqim.server import EmbeddedServer
from tests.broker.aioraw import PUBACK, PUBCOMP, PUBREL, SUBACK, UNSUBACK, AioRaw, ack, unsubscribe_packet
from tests.broker.conftest import RawFactory, broker_of
from tests.support.mqtt import Raw


def _cid(topic: str, name: str) -> str:
    return f"{name}-{topic.removeprefix('t/')}"


async def _closed_and_counted(server: EmbeddedServer, conn: AioRaw, errors: int) -> None:
    assert await conn.closed_by_server()
    assert broker_of(server).hub.counters.protocol_errors == errors + 1


BAD_FILTERS = ["", "ab/+e", "t/#/x", "t/a#", "#/t", "t/++"]


@pytest.mark.parametrize("bad", BAD_FILTERS)
async def test_subscribe_with_an_invalid_filter_closes(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, bad: str
) -> None:
    """MQTT-4.7.3-1 (empty), MQTT-4.7.1-2 (`#` last and alone), MQTT-4.7.1-3 (`+` a whole level)."""
    errors = broker_of(tserver).hub.counters.protocol_errors
    conn = await raw(_cid(topic, "sub"))
    conn.send(Raw.subscribe_packet(bad, 1, 7))
    packet = await conn.read()
    assert packet is None, f"answered {packet} instead of closing"  # no SUBACK 0x80
    assert broker_of(tserver).hub.counters.protocol_errors == errors + 1


async def test_subscribe_with_one_invalid_filter_applies_none(
    raw: RawFactory, tserver: EmbeddedServer, topic: str
) -> None:
    conn = await raw(_cid(topic, "sub"), clean=False)
    body = struct.pack("!H", 3)
    for text in (f"{topic}/ok", "ab/+e"):
        data = text.encode()
        body += struct.pack("!H", len(data)) + data + b"\x01"
    conn.send(bytes((0x82, len(body))) + body)
    assert await conn.read() is None
    session = broker_of(tserver).hub.sessions[_cid(topic, "sub")]
    assert f"{topic}/ok" not in session.subscriptions


@pytest.mark.parametrize("bad", BAD_FILTERS)
async def test_unsubscribe_with_an_invalid_filter_closes(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, bad: str
) -> None:
    errors = broker_of(tserver).hub.counters.protocol_errors
    conn = await raw(_cid(topic, "unsub"))
    conn.send(unsubscribe_packet(bad, 3))
    packet = await conn.read()
    assert packet is None or packet.type != UNSUBACK, packet
    if packet is not None:
        assert await conn.read() is None
    assert broker_of(tserver).hub.counters.protocol_errors == errors + 1


async def test_qos0_publish_with_dup_closes(raw: RawFactory, tserver: EmbeddedServer, topic: str) -> None:
    """MQTT-3.3.1-2: DUP must be 0 for QoS 0."""
    errors = broker_of(tserver).hub.counters.protocol_errors
    watcher = await raw(_cid(topic, "watch"))
    assert await watcher.subscribe(f"{topic}/x", 0) == 0
    conn = await raw(_cid(topic, "dup"))
    conn.send(Raw.publish_packet(f"{topic}/x", b"dup0", qos=0, dup=True))
    await _closed_and_counted(tserver, conn, errors)
    await watcher.nothing(0.3)  # not routed either


async def test_qos1_publish_with_dup_is_accepted(raw: RawFactory, topic: str) -> None:
    conn = await raw(_cid(topic, "dup1"))
    conn.send(Raw.publish_packet(f"{topic}/x", b"again", qos=1, pid=4, dup=True))
    assert (await conn.expect(PUBACK)).pid == 4


async def _delivery(raw: RawFactory, topic: str, qos: int) -> tuple[AioRaw, int]:
    """A subscriber holding one unacknowledged delivery of `qos`; returns it and the packet id."""
    sub = await raw(_cid(topic, f"sub{qos}"))
    assert await sub.subscribe(f"{topic}/q", qos) == qos
    pub = await raw(_cid(topic, f"pub{qos}"))
    await pub.publish(f"{topic}/q", b"m", qos=qos)
    got = await sub.receive()
    assert got.qos == qos
    assert got.pid is not None
    return sub, got.pid


@pytest.mark.parametrize(
    ("qos", "answer"),
    [
        (1, [5]),  # PUBREC for QoS 1 (MQTT-4.3.2-1)
        (1, [7]),  # PUBCOMP for QoS 1
        (2, [4]),  # PUBACK for QoS 2 (MQTT-4.3.3-1)
        (2, [7]),  # PUBCOMP before PUBREC
        (2, [5, 4]),  # PUBACK after PUBREL
    ],
    ids=[
        "pubrec-for-qos1",
        "pubcomp-for-qos1",
        "puback-for-qos2",
        "pubcomp-before-pubrec",
        "puback-after-pubrel",
    ],
)
async def test_acknowledgement_outside_the_qos_flow_closes(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, qos: int, answer: list[int]
) -> None:
    """MQTT-4.8.0-1: an acknowledgement that does not fit the delivery's QoS flow is a violation."""
    sub, pid = await _delivery(raw, topic, qos)
    errors = broker_of(tserver).hub.counters.protocol_errors
    for packet_type in answer[:-1]:
        sub.send(ack(packet_type, pid))
        if packet_type == 5:
            assert (await sub.expect(PUBREL)).pid == pid
    sub.send(ack(answer[-1], pid))
    await _closed_and_counted(tserver, sub, errors)


async def test_a_correct_qos2_flow_stays_open(raw: RawFactory, topic: str) -> None:
    sub, pid = await _delivery(raw, topic, 2)
    sub.send(ack(5, pid))
    assert (await sub.expect(PUBREL)).pid == pid
    sub.send(ack(PUBCOMP, pid))
    sub.send(Raw.subscribe_packet(f"{topic}/more", 0, 9))
    assert (await sub.expect(SUBACK)).pid == 9
