"""The MQTT 3.1.1 codec: round trips, malformed input, size limits, incremental decoding."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim import mqtt as c
from mqim.broker import MalformedPacket
from tests.support.mqtt import Raw

LIMIT = 64 * 1024


def _plain(got: list[c.Frame]) -> list[tuple[int, int, bytes]]:
    """Narrow frames to plain bodies: without a discard band no body is an `Oversize`."""
    out = []
    for packet_type, flags, body in got:
        assert isinstance(body, bytes)
        out.append((packet_type, flags, body))
    return out


def frames(data: bytes, *, limit: int = LIMIT) -> list[tuple[int, int, bytes]]:
    return _plain(c.PacketDecoder(max_packet_bytes=limit).feed(data))


def one(data: bytes) -> tuple[int, int, bytes]:
    got = frames(data)
    assert len(got) == 1
    return got[0]


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(raw)) + raw


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + c.encode_varint(len(body)) + body


def _connect_body(*, name: str = "MQTT", level: int = 4, flags: int = 0x02, payload: bytes = b"") -> bytes:
    return _s(name) + bytes((level, flags)) + struct.pack("!H", 30) + (payload or _s("cid"))


# -- round trips -------------------------------------------------------------------------------


def test_connect_round_trip_with_will_and_credentials() -> None:
    packet = Raw.connect_packet(
        client_id="dev-1",
        user="alice",
        password="secret",
        clean=False,
        keepalive=42,
        will=("t/will", b"gone", 1, True),
    )
    packet_type, flags, body = one(packet)
    assert packet_type == c.CONNECT
    connect = c.decode_connect(flags, body)
    assert connect == c.Connect(
        protocol_level=4,
        bridge=False,
        clean_session=False,
        keepalive=42,
        client_id="dev-1",
        will_topic="t/will",
        will_payload=b"gone",
        will_qos=1,
        will_retain=True,
        username="alice",
        password=b"secret",
    )


def test_connect_minimal_and_mqtt31_and_bridge_levels() -> None:
    connect = c.decode_connect(0, _connect_body(payload=_s("")))
    assert (connect.client_id, connect.clean_session, connect.username, connect.will_topic) == (
        "",
        True,
        None,
        None,
    )
    v31 = c.decode_connect(0, _connect_body(name="MQIsdp", level=3))
    assert (v31.protocol_level, v31.bridge) == (3, False)
    bridge = c.decode_connect(0, _connect_body(level=0x84))
    assert (bridge.protocol_level, bridge.bridge) == (4, True)


@given(
    topic=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=300),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    pid=st.integers(1, 65535),
)
def test_publish_round_trip(topic: str, payload: bytes, qos: int, retain: bool, dup: bool, pid: int) -> None:
    data = c.encode_publish(
        topic=c.encode_str(topic),
        payload=payload,
        qos=qos,
        retain=retain,
        dup=dup,
        packet_id=pid if qos else None,
    )
    packet_type, flags, body = one(data)
    assert packet_type == c.PUBLISH
    assert c.decode_publish(flags, body) == c.Publish(
        topic=topic, payload=payload, qos=qos, retain=retain, dup=dup, packet_id=pid if qos else None
    )


@pytest.mark.parametrize("packet_type", [c.PUBACK, c.PUBREC, c.PUBREL, c.PUBCOMP])
def test_ack_round_trip(packet_type: int) -> None:
    got_type, flags, body = one(c.encode_ack(packet_type, 513))
    assert got_type == packet_type
    assert c.decode_ack(got_type, flags, body) == 513


def test_subscribe_and_unsubscribe_decode() -> None:
    body = struct.pack("!H", 7) + _s("a/+") + b"\x01" + _s("b/#") + b"\x02" + _s("c") + b"\x00"
    packet_type, flags, got = one(_frame(0x82, body))
    assert packet_type == c.SUBSCRIBE
    assert c.decode_subscribe(flags, got) == (7, [("a/+", 1), ("b/#", 2), ("c", 0)])
    packet_type, flags, got = one(_frame(0xA2, struct.pack("!H", 9) + _s("a/+") + _s("b/#")))
    assert packet_type == c.UNSUBSCRIBE
    assert c.decode_unsubscribe(flags, got) == (9, ["a/+", "b/#"])
    assert c.decode_subscribe(*one(Raw.subscribe_packet("x/y", 2, pid=3))[1:]) == (3, [("x/y", 2)])


def test_server_packets_encode_per_spec() -> None:
    assert c.encode_connack(session_present=True, return_code=0) == b"\x20\x02\x01\x00"
    # MQTT-3.2.2-4: session present is 0 on a refused connection.
    assert c.encode_connack(session_present=True, return_code=c.REFUSED_UNAVAILABLE) == b"\x20\x02\x00\x03"
    assert c.encode_suback(10, [0, 1, c.SUBACK_FAILURE]) == b"\x90\x05\x00\x0a\x00\x01\x80"
    assert c.encode_unsuback(10) == b"\xb0\x02\x00\x0a"
    assert c.encode_ack(c.PUBREL, 1) == b"\x62\x02\x00\x01"
    assert c.PINGRESP_BYTES == b"\xd0\x00"


@pytest.mark.parametrize("size", [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455])
def test_remaining_length_varint_boundaries(size: int) -> None:
    encoded = c.encode_varint(size)
    assert len(encoded) == 1 + (size >= 128) + (size >= 16_384) + (size >= 2_097_152)
    decoder = c.PacketDecoder(max_packet_bytes=268_435_455)
    assert decoder.feed(b"\x30" + encoded) == ([(c.PUBLISH, 0, b"")] if size == 0 else [])
    with pytest.raises(ValueError, match="too large"):
        c.encode_varint(268_435_456)


# -- incremental decoding ----------------------------------------------------------------------


def test_feed_byte_by_byte_yields_the_same_frames() -> None:
    stream = b"".join(
        (
            Raw.connect_packet(client_id="x", user="u", password="p"),
            c.encode_publish(topic=c.encode_str("a/b"), payload=b"p" * 300, qos=1, packet_id=5),
            b"\xc0\x00",  # PINGREQ, empty body
            Raw.subscribe_packet("a/#", 1, pid=2),
            b"\xe0\x00",  # DISCONNECT
        )
    )
    whole = frames(stream)
    assert [f[0] for f in whole] == [c.CONNECT, c.PUBLISH, c.PINGREQ, c.SUBSCRIBE, c.DISCONNECT]
    decoder = c.PacketDecoder(max_packet_bytes=LIMIT)
    pieces: list[tuple[int, int, bytes]] = []
    for i in range(len(stream)):
        pieces.extend(_plain(decoder.feed(stream[i : i + 1])))
    assert pieces == whole
    assert decoder.buffered == 0


@given(stream_cuts=st.lists(st.integers(0, 400), max_size=8))
def test_feed_in_arbitrary_chunks(stream_cuts: list[int]) -> None:
    stream = b"".join(
        c.encode_publish(topic=c.encode_str(f"t/{n}"), payload=bytes(n * 20), qos=n % 3, packet_id=n + 1)
        for n in range(6)
    )
    cuts = sorted({min(cut, len(stream)) for cut in stream_cuts})
    decoder = c.PacketDecoder(max_packet_bytes=LIMIT)
    got: list[tuple[int, int, bytes]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got.extend(_plain(decoder.feed(stream[start:cut])))
        start = cut
    assert got == frames(stream)
    assert len(got) == 6


def test_partial_packet_stays_buffered() -> None:
    decoder = c.PacketDecoder(max_packet_bytes=LIMIT)
    data = c.encode_publish(topic=c.encode_str("a"), payload=b"xyz", qos=0)
    assert decoder.feed(data[:-1]) == []
    assert decoder.buffered == len(data) - 1
    assert decoder.feed(data[-1:]) == [(c.PUBLISH, 0, data[2:])]


# -- limits --------------------------------------------------------------------------------------


def test_oversized_remaining_length_is_refused_from_the_header_alone() -> None:
    decoder = c.PacketDecoder(max_packet_bytes=1024)
    header = b"\x30" + c.encode_varint(1025)
    # Only the fixed header arrived: the body is never waited for nor buffered.
    with pytest.raises(MalformedPacket, match="exceeds"):
        decoder.feed(header)
    exactly = c.PacketDecoder(max_packet_bytes=1024)
    assert exactly.feed(b"\x30" + c.encode_varint(1024)) == []


def test_remaining_length_longer_than_four_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="four bytes"):
        frames(b"\x30\xff\xff\xff\xff\x01")


# -- malformed packets ---------------------------------------------------------------------------

CID = _s("cid")

MALFORMED_CONNECT = {
    "fixed header flags": (1, _connect_body()),
    "reserved flag": (0, _connect_body(flags=0x03)),
    "will qos 3": (0, _connect_body(flags=0x02 | 0x04 | 0x18, payload=CID + _s("w") + _s("x"))),
    "will qos without will flag": (0, _connect_body(flags=0x02 | 0x08)),
    "will retain without will flag": (0, _connect_body(flags=0x02 | 0x20)),
    "password without username": (0, _connect_body(flags=0x42, payload=CID + _s("pw"))),
    "trailing bytes": (0, _connect_body(payload=CID + b"zz")),
    "truncated variable header": (0, _s("MQTT") + b"\x04"),
    "truncated client id": (0, _connect_body(payload=b"\x00\x09ab")),
    "missing will payload": (0, _connect_body(flags=0x06, payload=CID + _s("w"))),
    "missing username": (0, _connect_body(flags=0x82)),
    "invalid utf-8": (0, _connect_body(payload=_s(b"\xff\xfe"))),
    "nul in client id": (0, _connect_body(payload=_s("a\x00b"))),
    "empty body": (0, b""),
}


@pytest.mark.parametrize(("flags", "body"), MALFORMED_CONNECT.values(), ids=MALFORMED_CONNECT.keys())
def test_malformed_connect(flags: int, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        c.decode_connect(flags, body)


@pytest.mark.parametrize(
    ("name", "level"), [("MQTT", 5), ("MQTT", 3), ("MQIsdp", 4), ("MQTX", 4), ("MQTT", 0x85)]
)
def test_unsupported_protocol_is_its_own_malformed_kind(name: str, level: int) -> None:
    with pytest.raises(c.UnsupportedProtocol):
        c.decode_connect(0, _connect_body(name=name, level=level))


MALFORMED_PUBLISH = {
    "qos 3": (0x06, _s("t") + b"\x00\x01"),
    "packet id 0": (0x02, _s("t") + b"\x00\x00"),
    "missing packet id": (0x02, _s("t") + b"\x00"),
    "truncated topic": (0x00, b"\x00\x05ab"),
    "no topic length": (0x00, b"\x00"),
    "invalid utf-8 topic": (0x00, _s(b"\xc3\x28")),
    "nul in topic": (0x00, _s("a\x00")),
}


@pytest.mark.parametrize(("flags", "body"), MALFORMED_PUBLISH.values(), ids=MALFORMED_PUBLISH.keys())
def test_malformed_publish(flags: int, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        c.decode_publish(flags, body)


MALFORMED_SUBSCRIBE = {
    "flags 0000": (0x00, b"\x00\x01" + _s("a") + b"\x01"),
    "no filters": (0x02, b"\x00\x01"),
    "packet id 0": (0x02, b"\x00\x00" + _s("a") + b"\x01"),
    "qos byte 3": (0x02, b"\x00\x01" + _s("a") + b"\x03"),
    "reserved qos bits": (0x02, b"\x00\x01" + _s("a") + b"\x41"),
    "filter without qos": (0x02, b"\x00\x01" + _s("a")),
    "truncated packet id": (0x02, b"\x00"),
}


@pytest.mark.parametrize(("flags", "body"), MALFORMED_SUBSCRIBE.values(), ids=MALFORMED_SUBSCRIBE.keys())
def test_malformed_subscribe(flags: int, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        c.decode_subscribe(flags, body)


MALFORMED_UNSUBSCRIBE = {
    "flags 0000": (0x00, b"\x00\x01" + _s("a")),
    "no filters": (0x02, b"\x00\x01"),
    "packet id 0": (0x02, b"\x00\x00" + _s("a")),
    "truncated filter": (0x02, b"\x00\x01\x00\x04ab"),
}


@pytest.mark.parametrize(("flags", "body"), MALFORMED_UNSUBSCRIBE.values(), ids=MALFORMED_UNSUBSCRIBE.keys())
def test_malformed_unsubscribe(flags: int, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        c.decode_unsubscribe(flags, body)


@pytest.mark.parametrize(
    ("packet_type", "flags", "body"),
    [
        (c.PUBACK, 0, b"\x00"),
        (c.PUBACK, 0, b"\x00\x01\x00"),
        (c.PUBACK, 0, b"\x00\x00"),
        (c.PUBACK, 2, b"\x00\x01"),
        (c.PUBREL, 0, b"\x00\x01"),
        (c.PUBREC, 1, b"\x00\x01"),
        (c.PUBCOMP, 0, b""),
    ],
)
def test_malformed_acks(packet_type: int, flags: int, body: bytes) -> None:
    with pytest.raises(MalformedPacket):
        c.decode_ack(packet_type, flags, body)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_decode_or_raise_malformed(data: bytes) -> None:
    decoder = c.PacketDecoder(max_packet_bytes=LIMIT)
    try:
        got = _plain(decoder.feed(data))
    except MalformedPacket:
        return
    decoders = {
        c.CONNECT: c.decode_connect,
        c.PUBLISH: c.decode_publish,
        c.SUBSCRIBE: c.decode_subscribe,
        c.UNSUBSCRIBE: c.decode_unsubscribe,
    }
    for packet_type, flags, body in got:
        try:
            if packet_type in decoders:
                decoders[packet_type](flags, body)
            elif packet_type in (c.PUBACK, c.PUBREC, c.PUBREL, c.PUBCOMP):
                c.decode_ack(packet_type, flags, body)
        except MalformedPacket:
            pass


# -- oversize PUBLISH: discarded, not refused (issue 11) -----------------------------------------

SMALL = 1024
HARD = 8 * 1024


def _oversize_stream(qos: int, payload: bytes, *, topic: str = "im/u/alice/out") -> tuple[bytes, c.Oversize]:
    pid = 7 if qos else None
    packet = c.encode_publish(topic=c.encode_str(topic), payload=payload, qos=qos, packet_id=pid)
    header = 2 + len(topic.encode()) + (2 if qos else 0)
    expected = c.Oversize(
        topic=topic,
        qos=qos,
        packet_id=pid,
        payload_head=payload[: c.OVERSIZE_HEAD_BYTES],
        length=header + len(payload),
    )
    return packet, expected


def _feed_in_chunks(decoder: c.PacketDecoder, stream: bytes, chunk: int) -> list[c.Frame]:
    got: list[c.Frame] = []
    for start in range(0, len(stream), chunk):
        got.extend(decoder.feed(stream[start : start + chunk]))
        # Memory stays bounded whatever the packet's length: the head, never the body.
        assert decoder.buffered <= SMALL + c.OVERSIZE_HEAD_BYTES
    return got


@given(qos=st.sampled_from([0, 1, 2]), chunk=st.integers(1, 3000), size=st.integers(SMALL, HARD - 40))
def test_oversize_publish_streams_through_as_one_oversize_frame(qos: int, chunk: int, size: int) -> None:
    payload = bytes(n % 251 for n in range(size))
    big, expected = _oversize_stream(qos, payload)
    before = c.encode_publish(topic=c.encode_str("a/b"), payload=b"before", qos=1, packet_id=1)
    after = c.encode_publish(topic=c.encode_str("a/b"), payload=b"after", qos=0)
    stream = before + big + after + b"\xc0\x00"  # ... and a PINGREQ
    decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD)
    got = _feed_in_chunks(decoder, stream, chunk)
    assert got == [
        (c.PUBLISH, 0x02, before[2:]),
        (c.PUBLISH, qos << 1, expected),
        (c.PUBLISH, 0, after[2:]),
        (c.PINGREQ, 0, b""),
    ]
    assert decoder.buffered == 0
    assert not decoder.discarding


def test_oversize_publish_fed_one_byte_at_a_time() -> None:
    big, expected = _oversize_stream(1, b"{" + b"x" * 3000 + b"}")
    stream = big + b"\xc0\x00"
    decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD)
    got = _feed_in_chunks(decoder, stream, 1)
    assert got == [(c.PUBLISH, 0x02, expected), (c.PINGREQ, 0, b"")]
    assert len(expected.payload_head) == c.OVERSIZE_HEAD_BYTES


def test_oversize_frame_keeps_retain_and_dup_flags() -> None:
    payload = b"p" * 2000
    packet = c.encode_publish(
        topic=c.encode_str("t"), payload=payload, qos=2, retain=True, dup=True, packet_id=9
    )
    [(packet_type, flags, body)] = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD).feed(packet)
    assert (packet_type, flags) == (c.PUBLISH, 0x0D)
    assert body == c.Oversize(topic="t", qos=2, packet_id=9, payload_head=payload[:1024], length=2005)


def test_payload_head_is_the_whole_payload_when_shorter_than_the_head() -> None:
    # A low max_packet_bytes: the packet is oversize but its payload fits in the head.
    big, expected = _oversize_stream(0, b"z" * 300)
    got = c.PacketDecoder(max_packet_bytes=100, hard_limit_bytes=HARD).feed(big)
    assert got == [(c.PUBLISH, 0, expected)]
    assert expected.payload_head == b"z" * 300


def test_limits_are_inclusive() -> None:
    def body_of(length: int) -> bytes:
        return _s("t") + bytes(length - 3)

    at_max = _frame(0x30, body_of(SMALL))
    assert c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD).feed(at_max) == [
        (c.PUBLISH, 0, at_max[3:])
    ]
    for length in (SMALL + 1, HARD):
        got = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD).feed(
            _frame(0x30, body_of(length))
        )
        assert [(t, f, type(b)) for t, f, b in got] == [(c.PUBLISH, 0, c.Oversize)]
    # Above the hard limit the fixed header alone closes the connection, nothing is read further.
    decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD)
    with pytest.raises(MalformedPacket, match="exceeds the limit of 8192"):
        decoder.feed(b"\x30" + c.encode_varint(HARD + 1))


def test_a_large_oversize_publish_costs_no_memory() -> None:
    decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=16 * 1024 * 1024)
    big, expected = _oversize_stream(1, bytes(16 * 1024 * 1024 - 100))
    got = _feed_in_chunks(decoder, big, 64 * 1024)
    assert got == [(c.PUBLISH, 0x02, expected)]


@pytest.mark.parametrize("packet_type", [c.CONNECT, c.SUBSCRIBE, c.UNSUBSCRIBE, c.PUBACK, c.PINGREQ])
def test_other_packet_types_over_max_packet_bytes_are_refused(packet_type: int) -> None:
    first = (packet_type << 4) | (0x02 if packet_type in (c.SUBSCRIBE, c.UNSUBSCRIBE) else 0)
    decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD)
    with pytest.raises(MalformedPacket, match="exceeds the limit of 1024"):
        decoder.feed(bytes((first,)) + c.encode_varint(SMALL + 1))


GARBAGE_OVERSIZE_HEADERS = {
    "qos 3": (0x36, _s("t") + b"\x00\x01" + bytes(SMALL), "QoS 3"),
    "topic longer than the packet": (0x30, b"\xff\xff" + bytes(SMALL), "inside its variable header"),
    "header over max_packet_bytes": (0x32, _s("t" * SMALL) + b"\x00\x01" + bytes(100), "header of 1028"),
    "topic not UTF-8": (0x30, _s(b"\xff\xfe") + bytes(SMALL), "UTF-8"),
    "topic with U+0000": (0x30, _s("a\x00b") + bytes(SMALL), "U\\+0000"),
    "packet id 0": (0x32, _s("t") + b"\x00\x00" + bytes(SMALL), "identifier 0"),
}


@pytest.mark.parametrize(
    ("first", "body", "error"), GARBAGE_OVERSIZE_HEADERS.values(), ids=GARBAGE_OVERSIZE_HEADERS.keys()
)
@pytest.mark.parametrize("chunk", [1, 7, 64 * 1024])
def test_garbage_oversize_header_is_malformed(first: int, body: bytes, error: str, chunk: int) -> None:
    decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=HARD)
    stream = _frame(first, body)
    with pytest.raises(MalformedPacket, match=error):
        _feed_in_chunks(decoder, stream, chunk)


def test_oversize_publish_shorter_than_its_topic_prefix_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="variable header"):
        c.PacketDecoder(max_packet_bytes=0, hard_limit_bytes=HARD).feed(b"\x30\x01\x00")
    with pytest.raises(MalformedPacket, match="variable header"):
        # QoS 1: the packet identifier is missing.
        c.PacketDecoder(max_packet_bytes=1, hard_limit_bytes=HARD).feed(b"\x32\x03\x00\x01t")


def test_without_a_hard_limit_every_packet_over_the_limit_is_refused() -> None:
    for hard in (None, SMALL, SMALL - 1):
        decoder = c.PacketDecoder(max_packet_bytes=SMALL, hard_limit_bytes=hard)
        with pytest.raises(MalformedPacket, match="exceeds"):
            decoder.feed(b"\x30" + c.encode_varint(SMALL + 1))


@given(st.binary(max_size=3000), st.integers(1, 500))
def test_arbitrary_bytes_with_a_discard_band_decode_or_raise_malformed(data: bytes, chunk: int) -> None:
    decoder = c.PacketDecoder(max_packet_bytes=64, hard_limit_bytes=2048)
    try:
        got = _feed_in_chunks(decoder, data, chunk)
    except MalformedPacket:
        return
    for _, _, body in got:
        assert isinstance(body, bytes | c.Oversize)
