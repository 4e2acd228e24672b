"""Session: the bounded queue, the in-flight window and redelivery, without sockets."""

from __future__ import annotations

from mqim import mqtt as c
from mqim.acl import Identity
from mqim.broker import BrokerSettings
from mqim.broker._outgoing import Delivery
from mqim.broker._session import Session


class Socket:
    """Stands in for a connection: decodes what the session writes."""

    def __init__(self) -> None:
        self.writable = True
        self._decoder = c.PacketDecoder(max_packet_bytes=1 << 20)
        self.packets: list[c.Frame] = []

    def write(self, data: bytes) -> None:
        self.packets.extend(self._decoder.feed(data))

    def publishes(self) -> list[c.Publish]:
        return [
            c.decode_publish(flags, body)
            for t, flags, body in self.packets
            if t == c.PUBLISH and isinstance(body, bytes)
        ]

    def take(self) -> list[c.Publish]:
        out = self.publishes()
        self.packets.clear()
        return out


def session(*, persistent: bool = True, **limits: int) -> Session:
    return Session(
        client_id="c1",
        identity=Identity(user="u1", client_id="c1"),
        persistent=persistent,
        settings=BrokerSettings(**limits),  # type: ignore[arg-type]
        store=None,
    )


def put(s: Session, payload: bytes, qos: int = 1, topic: str = "t/x") -> int:
    """Deliver; returns the entries evicted."""
    delivery = s.deliver(topic, c.encode_str(topic), payload, qos)
    assert not delivery.refused
    return delivery.evicted


def test_qos0_is_not_queued_for_an_absent_client() -> None:
    s = session()
    put(s, b"x", qos=0)
    assert (s.dropped_qos0, len(s.queue)) == (1, 0)


def test_clean_session_offline_keeps_nothing() -> None:
    s = session(persistent=False)
    put(s, b"x")
    assert len(s.queue) == 0


def test_inflight_window_bounds_what_is_sent() -> None:
    s = session(max_inflight=2)
    sock = Socket()
    s.attach(sock)
    for n in range(5):
        put(s, f"m{n}".encode())
    sent = sock.take()
    assert [p.payload for p in sent] == [b"m0", b"m1"]
    assert s.on_puback(sent[0].packet_id or 0) is not None
    assert [p.payload for p in sock.take()] == [b"m2"]
    assert s.on_puback(999) is None  # unknown ids are ignored
    assert len(s.queue) == 4


def test_queue_bound_by_count_drops_oldest_pending() -> None:
    s = session(max_queue_messages=3)
    evicted = [put(s, f"m{n}".encode()) for n in range(5)]
    assert evicted == [0, 0, 0, 1, 1]
    assert [m.payload for m in s.pending] == [b"m2", b"m3", b"m4"]
    assert s.evicted == 2


def test_queue_bound_by_bytes() -> None:
    s = session(max_queue_bytes=3 * (100 + 5))  # payload + encoded topic "t/x"
    for n in range(5):
        put(s, bytes([n]) * 100)
    assert [m.payload[0] for m in s.pending] == [2, 3, 4]
    assert s.queued_bytes <= 3 * 105


def test_in_flight_entries_are_never_evicted() -> None:
    s = session(max_queue_messages=2, max_inflight=2)
    sock = Socket()
    s.attach(sock)
    put(s, b"a")
    put(s, b"b")
    put(s, b"c")
    put(s, b"d")
    # Sent entries cannot be recalled: only pending ones leave, the queue stays within its bound.
    assert [m.payload for m in s.queue.values()] == [b"a", b"b"]
    assert s.evicted == 2
    s.on_puback(1)
    put(s, b"e")
    assert [m.payload for m in s.queue.values()] == [b"b", b"e"]


def test_overflow_notice_stays_and_does_not_count() -> None:
    s = session(max_queue_messages=3)
    for n in range(4):
        if put(s, f"m{n}".encode()):
            s.queue_notice("im/v1/u/u1/event", c.encode_str("im/v1/u/u1/event"), b"sync!")
    for n in range(4, 10):
        put(s, f"m{n}".encode())
    payloads = [m.payload for m in s.pending]
    assert payloads.count(b"sync!") == 1
    assert [p for p in payloads if p != b"sync!"] == [b"m7", b"m8", b"m9"]
    sock = Socket()
    s.attach(sock)
    notice = next(p for p in sock.publishes() if p.payload == b"sync!")
    assert s.overflow_qid
    s.on_puback(notice.packet_id or 0)
    assert s.overflow_qid == 0  # read: the next overflow writes a new notice


def test_reattach_resends_inflight_with_dup_and_same_id() -> None:
    s = session()
    first = Socket()
    s.attach(first)
    put(s, b"q1", qos=1)
    put(s, b"q2", qos=2)
    put(s, b"q2b", qos=2)
    sent = first.take()
    s.on_puback(sent[0].packet_id or 0)
    s.on_pubrec(sent[2].packet_id or 0)  # q2b reached the client: PUBREL sent, waits for PUBCOMP
    assert [(t, c.decode_ack(t, f, b)) for t, f, b in first.packets if isinstance(b, bytes)] == [
        (c.PUBREL, sent[2].packet_id)
    ]
    s.detach(now=0.0)
    second = Socket()
    s.attach(second)
    # MQTT-4.4.0-1: unacknowledged PUBLISH again with DUP=1 and the same id; PUBREL again for
    # the released one.
    republished = second.publishes()
    assert [(p.payload, p.dup, p.packet_id) for p in republished] == [(b"q2", True, sent[1].packet_id)]
    rels = [c.decode_ack(t, f, b) for t, f, b in second.packets if t == c.PUBREL and isinstance(b, bytes)]
    assert rels == [sent[2].packet_id]
    s.on_pubcomp(sent[2].packet_id or 0)
    assert sent[2].packet_id not in s.inflight
    assert [m.payload for m in s.queue.values()] == [b"q2"]


def test_packet_ids_skip_ids_in_use_and_wrap() -> None:
    s = session(max_inflight=3)
    sock = Socket()
    s.attach(sock)
    s._next_pid = 65534
    for n in range(3):
        put(s, f"m{n}".encode())
    ids = [p.packet_id for p in sock.take()]
    assert ids == [65534, 65535, 1]
    s.on_puback(65535)
    s._next_pid = 65534  # 65534 is still in flight: the next free id is taken
    put(s, b"m3")
    assert [p.packet_id for p in sock.take()] == [65535]


def test_not_writable_holds_messages_until_resumed() -> None:
    s = session()
    sock = Socket()
    s.attach(sock)
    sock.writable = False
    put(s, b"held")
    put(s, b"dropped", qos=0)
    assert sock.take() == []
    assert s.dropped_qos0 == 1
    sock.writable = True
    s.pump()
    assert [p.payload for p in sock.take()] == [b"held"]


def test_a_full_service_queue_refuses_what_nobody_holds_instead_of_evicting() -> None:
    worker = Session(
        client_id="w1",
        identity=Identity(user="logic", client_id="w1", kind="service"),
        persistent=True,
        settings=BrokerSettings(max_queue_messages=2),
        store=None,
    )
    results = [worker.deliver("t/x", c.encode_str("t/x"), f"r{n}".encode(), 1) for n in range(3)]
    assert results == [Delivery(), Delivery(), Delivery(refused=True)]
    assert [m.payload for m in worker.queue.values()] == [b"r0", b"r1"]
    assert worker.evicted == 0


def test_an_eviction_is_reported_in_the_delivery() -> None:
    s = session(max_queue_messages=1)
    assert s.deliver("t/x", c.encode_str("t/x"), b"a", 1) == Delivery()
    assert s.deliver("t/x", c.encode_str("t/x"), b"b", 1) == Delivery(evicted=1)
