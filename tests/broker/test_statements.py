"""One test per server-side MUST of MQTT 3.1.1 that `docs/mqtt-3.1.1-conformance.md` lacked a test for.

Organised by statement id; every test names its statement (`test_mqtt_<section>_<n>_...`).
Each one talks to a real server on a loopback port through raw sockets (`AioRaw`), which send
exactly the bytes a test asks for (what client libraries refuse to send included) and report
exactly what comes back: flags, packet ids, order, the server closing the socket.

Where a test shows that something did NOT happen, it does so by order rather than by waiting: a
marker message published afterwards must be the next thing a subscriber receives.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Callable

import pytest

from mqim.mqtt import REFUSED_BAD_CREDENTIALS, REFUSED_IDENTIFIER, REFUSED_UNAVAILABLE
from mqim.server import EmbeddedServer
from tests.broker.aioraw import (
    CONNACK,
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
    AioRaw,
    Pub,
    ack,
    parse_publish,
)
from tests.broker.conftest import RawFactory, ServerFactory, broker_of
from tests.support.mqtt import Raw

SUBACK_FAILURE = 0x80


def cid(topic: str, name: str) -> str:
    return f"{name}-{topic.removeprefix('t/')}"


def frame(first: int, body: bytes) -> bytes:
    """A packet: the first byte, the remaining length (variable byte integer), the body."""
    out = bytearray((first,))
    n = len(body)
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out) + body


def mqtt_str(raw: bytes) -> bytes:
    return struct.pack("!H", len(raw)) + raw


def subscribe_many(pairs: list[tuple[bytes, int]], pid: int) -> bytes:
    """One SUBSCRIBE with several (filter bytes, QoS) pairs."""
    body = struct.pack("!H", pid) + b"".join(mqtt_str(f) + bytes((q,)) for f, q in pairs)
    return frame(0x82, body)


def unsubscribe_many(filters: list[bytes], pid: int) -> bytes:
    """One UNSUBSCRIBE with several filters."""
    return frame(0xA2, struct.pack("!H", pid) + b"".join(mqtt_str(f) for f in filters))


async def suback_codes(conn: AioRaw, pid: int) -> list[int]:
    packet = await conn.expect(SUBACK)
    assert packet.pid == pid
    return list(packet.body[2:])


async def receive_acking(conn: AioRaw, count: int, timeout: float = 10.0) -> list[Pub]:
    """Receive `count` PUBLISHes, completing each one's QoS flow."""
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
        got.append(pub)
    return got


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def offline(server: EmbeddedServer, client_id: str) -> Callable[[], bool]:
    """Whether the server has noticed that `client_id`'s connection is gone."""

    def check() -> bool:
        session = broker_of(server).hub.sessions.get(client_id)
        return session is None or session.conn is None

    return check


# == 1.5.3 UTF-8 strings ===========================================================================


async def test_mqtt_1_5_3_3_a_bom_is_kept_and_never_stripped(raw: RawFactory, topic: str) -> None:
    """MQTT-1.5.3-3: EF BB BF is U+FEFF, part of the string: `\\ufeffx` and `x` are two topics."""
    with_bom, without = f"{topic}/\ufeffbom", f"{topic}/bom"
    sub_bom, sub_plain = await raw(cid(topic, "bom")), await raw(cid(topic, "plain"))
    assert await sub_bom.subscribe(with_bom, 1) == 1
    assert await sub_plain.subscribe(without, 1) == 1
    for conn in (sub_bom, sub_plain):
        assert await conn.subscribe(f"{topic}/end", 1, pid=2) == 1
    pub = await raw(cid(topic, "pub"))
    await pub.publish(with_bom, b"with", qos=1, pid=1)
    await pub.publish(without, b"without", qos=1, pid=2)
    await pub.publish(f"{topic}/end", b"end", qos=1, pid=3)

    first = await sub_bom.expect(PUBLISH)
    assert b"\xef\xbb\xbfbom" in first.body  # the BOM left on the wire as it came in
    rest = await receive_acking(sub_bom, 1)
    assert [(parse_publish(first).topic, parse_publish(first).payload)] + [
        (p.topic, p.payload) for p in rest
    ] == [(with_bom, b"with"), (f"{topic}/end", b"end")]
    got = await receive_acking(sub_plain, 2)
    assert [(p.topic, p.payload) for p in got] == [(without, b"without"), (f"{topic}/end", b"end")]


# == 3.1 CONNECT ===================================================================================


async def test_mqtt_3_1_2_7_retained_messages_outlive_the_session_that_published_them(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.1.2-7: retained messages are not session state; the session's end keeps them."""
    publisher_id = cid(topic, "pub")
    pub = await raw(publisher_id, clean=False)
    await pub.publish(f"{topic}/r", b"kept", qos=1, retain=True)
    pub.send(DISCONNECT)
    assert await pub.closed_by_server()
    # CleanSession=1 with the same client id discards that session entirely (MQTT-3.1.2-6).
    again = await raw(publisher_id, clean=True)
    again.send(DISCONNECT)
    assert await again.closed_by_server()

    sub = await raw(cid(topic, "sub"))
    assert await sub.subscribe(f"{topic}/r", 1) == 1
    (got,) = await receive_acking(sub, 1)
    assert (got.topic, got.payload, got.retain) == (f"{topic}/r", b"kept", True)


async def test_mqtt_3_1_2_12_no_will_flag_no_will_published(
    raw: RawFactory, tserver: EmbeddedServer, topic: str
) -> None:
    """MQTT-3.1.2-12: a connection without the will flag publishes nothing when it is lost."""
    watcher = await raw(cid(topic, "watcher"))
    assert await watcher.subscribe(f"{topic}/#", 1) == 1
    no_will_id = cid(topic, "nowill")
    no_will = await raw(no_will_id)
    no_will.reset()  # an abrupt loss: the case where a will would be published
    await eventually(offline(tserver, no_will_id))
    # Marker: a connection with a will, lost the same way. Its will is the first thing published.
    with_will = await raw(cid(topic, "will"), will=(f"{topic}/will", b"gone", 1, False))
    with_will.reset()
    (first,) = await receive_acking(watcher, 1)
    assert (first.topic, first.payload) == (f"{topic}/will", b"gone")


@pytest.mark.parametrize("client_id", ["a", "Z", "7", "0123456789abcdefXYZwxyz"])
async def test_mqtt_3_1_3_5_client_ids_of_1_to_23_alphanumerics_are_accepted(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, client_id: str
) -> None:
    """MQTT-3.1.3-5: 1 to 23 characters of [0-9a-zA-Z] are accepted and identify a session."""
    assert len(client_id) <= 23
    conn = await raw(client_id, clean=False)
    assert await conn.subscribe(f"{topic}/q", 1) == 1
    conn.send(DISCONNECT)
    assert await conn.closed_by_server()
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/q", b"queued", qos=1)
    back = await AioRaw.open(tserver.port())
    try:
        present, rc = await back.connect(client_id, clean=False)
        assert (present, rc) == (True, 0)
        (got,) = await receive_acking(back, 1)
        assert got.payload == b"queued"
    finally:
        await back.close()


def _refused_connects(topic: str) -> list[tuple[str, bytes, int]]:
    return [
        # Refused before authentication (MQTT-3.1.3-8)...
        ("empty id, persistent", Raw.connect_packet(client_id="", clean=False), REFUSED_IDENTIFIER),
        # ...and after it (the CONNECT waits for a password check meanwhile).
        (
            "bad credentials",
            Raw.connect_packet(client_id=cid(topic, "x"), user="nobody", password="wrong"),
            REFUSED_BAD_CREDENTIALS,
        ),
    ]


@pytest.mark.parametrize("case", [0, 1], ids=["refused before authentication", "bad credentials"])
async def test_mqtt_3_1_4_5_nothing_behind_a_refused_connect_is_processed(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, case: int
) -> None:
    """MQTT-3.1.4-5: packets sent right behind a refused CONNECT (same segment) are not processed."""
    _, connect, code = _refused_connects(topic)[case]
    watcher = await raw(cid(topic, "watcher"))
    assert await watcher.subscribe(f"{topic}/#", 1) == 1
    conn = await AioRaw.open(tserver.port())
    try:
        conn.send(
            connect
            + Raw.publish_packet(f"{topic}/sneaked", b"qos1", qos=1, pid=1)
            + Raw.publish_packet(f"{topic}/sneaked", b"qos0", qos=0)
            + Raw.publish_packet(f"{topic}/sneaked", b"retained", qos=0, retain=True)
            + Raw.subscribe_packet(f"{topic}/#", 1, 2)
        )
        first = await conn.read(10)
        assert first is not None
        assert first.type == CONNACK
        assert first.body[1] == code
        assert await conn.read(5) is None  # closed: no PUBACK, no SUBACK
    finally:
        await conn.close()
    marker = await raw(cid(topic, "marker"))
    await marker.publish(f"{topic}/marker", b"m", qos=1)
    (got,) = await receive_acking(watcher, 1)
    assert (got.topic, got.payload) == (f"{topic}/marker", b"m")
    late = await raw(cid(topic, "late"))
    assert await late.subscribe(f"{topic}/sneaked", 1) == 1
    await late.publish(f"{topic}/sneaked", b"live", qos=1, pid=2)
    (only,) = await receive_acking(late, 1)
    assert (only.payload, only.retain) == (b"live", False)  # nothing was retained


# == 3.2 CONNACK ===================================================================================


async def test_mqtt_3_2_0_1_the_first_packet_from_the_server_is_connack(
    raw: RawFactory, tserver: EmbeddedServer, topic: str
) -> None:
    """MQTT-3.2.0-1: even with queued messages waiting, CONNACK leaves first, then the queue."""
    client_id = cid(topic, "sub")
    sub = await raw(client_id, clean=False)
    assert await sub.subscribe(f"{topic}/q", 1) == 1
    sub.send(DISCONNECT)
    assert await sub.closed_by_server()
    pub = await raw(cid(topic, "pub"))
    for n in range(3):
        await pub.publish(f"{topic}/q", f"m{n}".encode(), qos=1, pid=n + 1)
    conn = await AioRaw.open(tserver.port())
    try:
        conn.send(Raw.connect_packet(client_id=client_id, clean=False))
        first = await conn.read(10)
        assert first is not None
        assert first.type == CONNACK, f"first packet {first}"
        assert first.body == b"\x01\x00"  # session present, accepted
        got = await receive_acking(conn, 3)
        assert [p.payload for p in got] == [b"m0", b"m1", b"m2"]
    finally:
        await conn.close()


# == 3.3 PUBLISH ===================================================================================


@pytest.mark.parametrize("qos", [1, 2])
async def test_mqtt_3_3_1_3_the_incoming_dup_flag_is_not_propagated(
    raw: RawFactory, topic: str, qos: int
) -> None:
    """MQTT-3.3.1-3: a first delivery has DUP=0 even when the publisher's PUBLISH had DUP=1."""
    sub = await raw(cid(topic, "sub"))
    assert await sub.subscribe(f"{topic}/d", 2) == 2
    pub = await raw(cid(topic, "pub"))
    pub.send(Raw.publish_packet(f"{topic}/d", b"dup", qos=qos, pid=5, dup=True, retain=True))
    if qos == 1:
        assert (await pub.expect(PUBACK)).pid == 5
    else:
        assert (await pub.expect(PUBREC)).pid == 5
        pub.send(ack(PUBREL, 5))
        assert (await pub.expect(PUBCOMP)).pid == 5
    (live,) = await receive_acking(sub, 1)
    assert (live.payload, live.qos, live.dup) == (b"dup", qos, False)
    later = await raw(cid(topic, "later"))
    assert await later.subscribe(f"{topic}/d", 2) == 2
    (retained,) = await receive_acking(later, 1)
    assert (retained.payload, retained.retain, retained.dup) == (b"dup", True, False)


async def test_mqtt_3_3_1_7_a_qos0_retained_message_replaces_the_previous_one(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.3.1-7: a QoS 0 retained PUBLISH replaces a QoS 1 retained message on its topic."""
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/r", b"old", qos=1, pid=1, retain=True)
    await pub.publish(f"{topic}/r", b"new", qos=0, retain=True)
    await pub.publish(f"{topic}/sync", b"", qos=1, pid=2)  # PUBACK: the QoS 0 one was handled
    sub = await raw(cid(topic, "sub"))
    assert await sub.subscribe(f"{topic}/r", 1) == 1
    await pub.publish(f"{topic}/r", b"marker", qos=1, pid=3)
    got = await receive_acking(sub, 2)
    assert [(p.payload, p.qos, p.retain) for p in got] == [(b"new", 0, True), (b"marker", 1, False)]


async def test_mqtt_3_3_1_12_retain_0_neither_stores_nor_replaces_nor_removes(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.3.1-12: RETAIN=0 (even with an empty payload) leaves the retained store alone."""
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/r", b"keep", qos=1, pid=1, retain=True)
    await pub.publish(f"{topic}/r", b"not retained", qos=1, pid=2)
    await pub.publish(f"{topic}/r", b"", qos=1, pid=3)  # empty, RETAIN=0: not a removal
    await pub.publish(f"{topic}/never", b"not retained", qos=1, pid=4)
    sub = await raw(cid(topic, "sub"))
    assert await sub.subscribe(f"{topic}/r", 1) == 1
    assert await sub.subscribe(f"{topic}/never", 1, pid=2) == 1
    await pub.publish(f"{topic}/never", b"marker", qos=1, pid=5)
    got = await receive_acking(sub, 2)
    assert [(p.topic, p.payload, p.retain) for p in got] == [
        (f"{topic}/r", b"keep", True),
        (f"{topic}/never", b"marker", False),
    ]


# == 3.8, 3.9 SUBSCRIBE, SUBACK ====================================================================

BAD_UTF8 = [b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"]  # invalid bytes, truncated, an encoded surrogate


@pytest.mark.parametrize("bad", BAD_UTF8, ids=["invalid", "truncated", "surrogate"])
async def test_mqtt_3_8_3_1_a_subscribe_filter_must_be_utf8(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, bad: bytes
) -> None:
    """MQTT-3.8.3-1 (and MQTT-1.5.3-1): an ill-formed UTF-8 filter closes; no SUBACK."""
    errors = broker_of(tserver).hub.counters.protocol_errors
    conn = await raw(cid(topic, "sub"))
    conn.send(subscribe_many([(topic.encode() + b"/" + bad, 1)], pid=3))
    packet = await conn.read()
    assert packet is None, f"answered {packet} instead of closing"
    assert broker_of(tserver).hub.counters.protocol_errors == errors + 1


async def test_mqtt_3_8_3_1_a_well_formed_non_ascii_filter_is_granted(raw: RawFactory, topic: str) -> None:
    """MQTT-3.8.3-1: the positive side: a multi-byte UTF-8 filter is a filter like any other."""
    conn = await raw(cid(topic, "sub"))
    assert await conn.subscribe(f"{topic}/\u00e9t\u00e9/\U0001f600", 1) == 1
    await conn.publish(f"{topic}/\u00e9t\u00e9/\U0001f600", b"x", qos=1, pid=2)
    (got,) = await receive_acking(conn, 1)
    assert got.topic == f"{topic}/\u00e9t\u00e9/\U0001f600"


async def test_mqtt_3_8_4_4_several_filters_are_several_subscribes_and_one_suback(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.8.4-4: each filter applies as its own SUBSCRIBE would; one SUBACK answers them all."""
    sub = await raw(cid(topic, "sub"))
    sub.send(
        subscribe_many(
            [
                (f"{topic}/a".encode(), 0),
                (f"{topic}/b/+".encode(), 1),
                (f"{topic}/c".encode(), 2),
                (f"{topic}/c".encode(), 1),  # a later SUBSCRIBE of the same filter replaces it
            ],
            pid=9,
        )
    )
    assert await suback_codes(sub, 9) == [0, 1, 2, 1]
    sub.send(PINGREQ)
    answer = await sub.read()
    assert answer is not None
    assert answer.type == PINGRESP, f"{answer}"  # no second SUBACK first
    pub = await raw(cid(topic, "pub"))
    for n, name in enumerate(("a", "b/x", "c")):
        await pub.publish(f"{topic}/{name}", name.encode(), qos=2, pid=n + 1)
    got = await receive_acking(sub, 3)
    assert [(p.topic, p.qos) for p in got] == [(f"{topic}/a", 0), (f"{topic}/b/x", 1), (f"{topic}/c", 1)]


async def test_mqtt_3_9_3_1_return_codes_follow_the_order_of_the_filters(raw: RawFactory, topic: str) -> None:
    """MQTT-3.9.3-1: the n-th return code answers the n-th filter (failures included)."""
    sub = await raw(cid(topic, "sub"))
    pairs = [
        (f"{topic}/two".encode(), 2),
        (b"outside/the/rules", 1),  # nothing under it may be received: 0x80
        (f"{topic}/zero".encode(), 0),
        (f"{topic}/one".encode(), 1),
        (b"also/outside", 2),
        (f"{topic}/+/two".encode(), 2),
    ]
    sub.send(subscribe_many(pairs, pid=4))
    assert await suback_codes(sub, 4) == [2, SUBACK_FAILURE, 0, 1, SUBACK_FAILURE, 2]


async def test_mqtt_3_9_3_2_only_0_1_2_and_0x80_are_returned(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    """MQTT-3.9.3-2: a QoS cap, an ACL refusal and a subscription limit still give only 0-2, 0x80."""
    server = await make_server(max_qos=1, max_subscriptions_per_session=3)
    sub = await connect_raw(server.port(), cid(topic, "sub"))
    pairs = [
        (f"{topic}/a".encode(), 2),  # capped by max_qos: 1
        (f"{topic}/b".encode(), 0),
        (b"outside/the/rules", 1),  # ACL: 0x80
        (f"{topic}/c".encode(), 1),
        (f"{topic}/d".encode(), 2),  # the fourth own filter: over the limit, 0x80
    ]
    sub.send(subscribe_many(pairs, pid=6))
    codes = await suback_codes(sub, 6)
    assert codes == [1, 0, SUBACK_FAILURE, 1, SUBACK_FAILURE]
    assert set(codes) <= {0x00, 0x01, 0x02, SUBACK_FAILURE}


# == 3.10, 3.11 UNSUBSCRIBE, UNSUBACK ==============================================================


@pytest.mark.parametrize("bad", BAD_UTF8, ids=["invalid", "truncated", "surrogate"])
async def test_mqtt_3_10_3_1_an_unsubscribe_filter_must_be_utf8(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, bad: bytes
) -> None:
    """MQTT-3.10.3-1 (and MQTT-1.5.3-1): an ill-formed UTF-8 filter closes; no UNSUBACK."""
    errors = broker_of(tserver).hub.counters.protocol_errors
    conn = await raw(cid(topic, "sub"))
    conn.send(unsubscribe_many([topic.encode() + b"/" + bad], pid=3))
    packet = await conn.read()
    assert packet is None, f"answered {packet} instead of closing"
    assert broker_of(tserver).hub.counters.protocol_errors == errors + 1


async def test_mqtt_3_10_4_3_a_qos1_delivery_started_before_unsubscribe_is_completed(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.10.4-3: an unacknowledged QoS 1 delivery survives UNSUBSCRIBE, and is re-sent."""
    client_id = cid(topic, "sub")
    sub = await raw(client_id, clean=False)
    assert await sub.subscribe(f"{topic}/q", 1) == 1
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/q", b"started", qos=1)
    started = await sub.receive()
    assert started.pid is not None
    await sub.unsubscribe(f"{topic}/q", pid=2)  # not acknowledged yet
    sub.reset()
    again = await raw(client_id, clean=False)
    resent = await again.receive()
    assert (resent.payload, resent.pid, resent.dup) == (b"started", started.pid, True)
    again.send(ack(PUBACK, started.pid))
    again.send(PINGREQ)
    assert (await again.expect(PINGRESP)).type == PINGRESP  # the acknowledgement was in order


async def test_mqtt_3_10_4_3_a_qos2_delivery_started_before_unsubscribe_is_completed(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.10.4-3: after UNSUBSCRIBE, a QoS 2 delivery in flight still gets its PUBREL."""
    sub = await raw(cid(topic, "sub"))
    assert await sub.subscribe(f"{topic}/q", 2) == 2
    pub = await raw(cid(topic, "pub"))
    await pub.publish(f"{topic}/q", b"started", qos=2)
    started = await sub.receive()
    assert started.pid is not None
    assert started.qos == 2
    await sub.unsubscribe(f"{topic}/q", pid=2)
    sub.send(ack(PUBREC, started.pid))
    assert (await sub.expect(PUBREL)).pid == started.pid
    sub.send(ack(PUBCOMP, started.pid))
    sub.send(PINGREQ)
    await sub.expect(PINGRESP)


async def test_mqtt_3_10_4_6_several_filters_are_handled_in_turn_with_one_unsuback(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-3.10.4-6: one UNSUBSCRIBE of several filters removes each; one UNSUBACK."""
    sub = await raw(cid(topic, "sub"))
    names = ("a", "b", "c/+")
    sub.send(subscribe_many([(f"{topic}/{n}".encode(), 1) for n in names], pid=1))
    assert await suback_codes(sub, 1) == [1, 1, 1]
    # Two of them, an unknown filter, and one twice: handled in turn.
    sub.send(
        unsubscribe_many(
            [
                f"{topic}/a".encode(),
                f"{topic}/unknown".encode(),
                f"{topic}/c/+".encode(),
                f"{topic}/a".encode(),
            ],
            pid=7,
        )
    )
    assert (await sub.expect(UNSUBACK)).pid == 7
    pub = await raw(cid(topic, "pub"))
    for n, name in enumerate(("a", "c/x", "b")):
        await pub.publish(f"{topic}/{name}", name.encode(), qos=1, pid=n + 1)
    first = await sub.read()  # a second UNSUBACK would come before any PUBLISH
    assert first is not None
    assert first.type == PUBLISH, f"expected the PUBLISH on b, got {first}"
    assert parse_publish(first).topic == f"{topic}/b"


# == 3.14 DISCONNECT ===============================================================================


@pytest.mark.parametrize(
    "packet", [b"\xe1\x00", b"\xe8\x00", b"\xe0\x01\x00"], ids=["flag 1", "flag 8", "body"]
)
async def test_mqtt_3_14_1_1_a_disconnect_with_reserved_bits_is_a_violation(
    raw: RawFactory, tserver: EmbeddedServer, topic: str, packet: bytes
) -> None:
    """MQTT-3.14.1-1: reserved bits set: closed as a violation, so the will IS published (3.1.2-8)."""
    errors = broker_of(tserver).hub.counters.protocol_errors
    watcher = await raw(cid(topic, "watcher"))
    assert await watcher.subscribe(f"{topic}/will", 1) == 1
    conn = await raw(cid(topic, "client"), will=(f"{topic}/will", b"violated", 1, False))
    conn.send(packet)
    assert await conn.closed_by_server()
    (will,) = await receive_acking(watcher, 1)
    assert will.payload == b"violated"
    assert broker_of(tserver).hub.counters.protocol_errors == errors + 1


# == 4.3 QoS 0 =====================================================================================


async def test_mqtt_4_3_1_1_a_qos0_delivery_has_qos0_dup0_and_no_packet_id(
    raw: RawFactory, topic: str
) -> None:
    """MQTT-4.3.1-1: QoS 0 deliveries (QoS 0 published, or downgraded) are QoS 0, DUP 0, no id."""
    high, low = await raw(cid(topic, "high")), await raw(cid(topic, "low"))
    assert await high.subscribe(f"{topic}/z", 2) == 2
    assert await low.subscribe(f"{topic}/z", 0) == 0
    pub = await raw(cid(topic, "pub"))
    pub.send(Raw.publish_packet(f"{topic}/z", b"zero", qos=0))
    pub.send(Raw.publish_packet(f"{topic}/z", b"dup-one", qos=1, pid=3, dup=True))
    assert (await pub.expect(PUBACK)).pid == 3
    topic_field = mqtt_str(f"{topic}/z".encode())
    expected_first = topic_field + b"zero"  # no packet id between the topic and the payload
    for conn in (high, low):
        packet = await conn.expect(PUBLISH)
        assert (packet.flags, packet.body) == (0, expected_first)
    downgraded = await low.expect(PUBLISH)
    assert (downgraded.flags, downgraded.body) == (0, topic_field + b"dup-one")
    (upgraded,) = await receive_acking(high, 1)
    assert (upgraded.qos, upgraded.dup, upgraded.payload) == (1, False, b"dup-one")


# == 4.6 Message ordering ==========================================================================


async def test_mqtt_4_6_0_5_a_topic_is_ordered_by_default(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    """MQTT-4.6.0-5 with 4.6.0-2/-3: pipelined PUBLISHes are acknowledged and delivered in order."""
    server = await make_server(publish_rate=0.0)
    port = server.port()
    subs = [await connect_raw(port, cid(topic, f"sub{q}")) for q in (1, 2)]
    for q, conn in zip((1, 2), subs, strict=True):
        assert await conn.subscribe(f"{topic}/o", q) == q
    pub = await connect_raw(port, cid(topic, "pub"))
    count = 40
    pub.send(b"".join(Raw.publish_packet(f"{topic}/o", b"%d" % n, qos=1, pid=n + 1) for n in range(count)))
    assert [(await pub.expect(PUBACK)).pid for _ in range(count)] == list(range(1, count + 1))
    pub.send(b"".join(Raw.publish_packet(f"{topic}/o", b"q2-%d" % n, qos=2, pid=n + 100) for n in range(10)))
    assert [(await pub.expect(PUBREC)).pid for _ in range(10)] == list(range(100, 110))
    pub.send(b"".join(ack(PUBREL, n + 100) for n in range(10)))
    assert [(await pub.expect(PUBCOMP)).pid for _ in range(10)] == list(range(100, 110))
    expected = [b"%d" % n for n in range(count)] + [b"q2-%d" % n for n in range(10)]
    for conn in subs:
        got = await receive_acking(conn, count + 10)
        assert [p.payload for p in got] == expected


async def test_mqtt_4_6_0_6_per_topic_and_qos_deliveries_keep_each_clients_order(
    make_server: ServerFactory, connect_raw: RawFactory, topic: str
) -> None:
    """MQTT-4.6.0-6: per topic and QoS, PUBLISHes reach a subscriber in each client's order."""
    server = await make_server(publish_rate=0.0)
    port = server.port()
    sub = await connect_raw(port, cid(topic, "sub"))
    assert await sub.subscribe(f"{topic}/o", 2) == 2
    pubs = [await connect_raw(port, cid(topic, f"pub{n}")) for n in range(2)]
    per_client = 30
    for n, pub in enumerate(pubs):
        data = b""
        for m in range(per_client):
            qos = m % 3
            data += Raw.publish_packet(f"{topic}/o", b"%d:%d:%d" % (n, qos, m), qos=qos, pid=m + 1)
        pub.send(data)  # both pipelined at once: their messages interleave at the server
    for pub in pubs:
        for m in range(per_client):
            if m % 3 == 1:
                assert (await pub.expect(PUBACK)).pid == m + 1
            elif m % 3 == 2:
                assert (await pub.expect(PUBREC)).pid == m + 1
                pub.send(ack(PUBREL, m + 1))
        for m in range(2, per_client, 3):
            assert (await pub.expect(PUBCOMP)).pid == m + 1
    got = await receive_acking(sub, 2 * per_client)
    for n in range(2):
        for qos in range(3):
            seen = [p.payload for p in got if p.payload.startswith(b"%d:%d:" % (n, qos))]
            assert seen == [b"%d:%d:%d" % (n, qos, m) for m in range(qos, per_client, 3)]
            assert all(p.qos == qos for p in got if p.payload.startswith(b"%d:%d:" % (n, qos)))


# == 4.7 Topic names and filters ===================================================================

# Strings that a normalising matcher would fold together; MQTT-4.7.3-4 says they stay apart.
VARIANTS = [
    "caf\u00e9",  # NFC
    "cafe\u0301",  # NFD: the same text after Unicode normalisation
    "Caf\u00e9",  # case
    "CAF\u00c9",
    "caf\u00e9 ",  # trailing space
    "caf\u00e9/",  # trailing level separator: an empty last level
    "/caf\u00e9",  # an empty level
    "\uff43\uff41\uff46\u00e9",  # full-width letters (NFKC folds them to "caf")
]


async def test_mqtt_4_7_3_4_no_normalisation_when_matching(raw: RawFactory, topic: str) -> None:
    """MQTT-4.7.3-4: filters and names are compared as given: no case folding, no Unicode
    normalisation, no trimming of spaces or separators."""
    subs = []
    for n, variant in enumerate(VARIANTS):
        conn = await raw(cid(topic, f"sub{n}"))
        conn.send(subscribe_many([(f"{topic}/{variant}".encode(), 1), (f"{topic}/end".encode(), 1)], pid=1))
        assert await suback_codes(conn, 1) == [1, 1]
        subs.append(conn)
    pub = await raw(cid(topic, "pub"))
    for n, variant in enumerate(VARIANTS):
        await pub.publish(f"{topic}/{variant}", b"%d" % n, qos=1, pid=n + 1)
    await pub.publish(f"{topic}/end", b"end", qos=1, pid=99)
    for n, conn in enumerate(subs):
        got = await receive_acking(conn, 2)
        assert [(p.topic, p.payload) for p in got] == [
            (f"{topic}/{VARIANTS[n]}", b"%d" % n),
            (f"{topic}/end", b"end"),
        ], f"subscriber of {VARIANTS[n]!r}"


# == 4.8 Handling errors ===========================================================================


async def test_mqtt_4_8_0_2_a_transient_error_while_processing_connect_closes(
    raw: RawFactory, tserver: EmbeddedServer, topic: str
) -> None:
    """MQTT-4.8.0-2: the account storage failing during a CONNECT: CONNACK 3, then closed."""
    user = f"u{uuid.uuid4().hex[:8]}"
    await tserver.storage.add_user(user, password="right-password")
    ok = await raw(cid(topic, "ok"), user=user, password="right-password")
    ok.send(DISCONNECT)
    await tserver.storage.close()  # the storage goes away: every password check now fails
    conn = await AioRaw.open(tserver.port())
    try:
        conn.send(
            Raw.connect_packet(client_id=cid(topic, "hit"), user=user, password="right-password")
            + Raw.publish_packet(f"{topic}/x", b"behind", qos=1, pid=1)
        )
        first = await conn.read(10)
        assert first is not None
        assert first.type == CONNACK
        assert first.body == bytes((0, REFUSED_UNAVAILABLE))
        assert await conn.read(5) is None  # closed, and the PUBLISH behind it was not answered
    finally:
        await conn.close()
    # Only that connection: the others are served as before.
    other = await raw(cid(topic, "anon"))
    await other.publish(f"{topic}/x", b"fine", qos=1)
