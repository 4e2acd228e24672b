"""MQTT 3.1.1 packets: constants, decoded packet types, decode and encode functions. Pure, no I/O.

Encoding builds whole packets as `bytes`; the incremental stream decoder is `_decoder.py`. Spec
references are to MQTT 3.1.1 (OASIS).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from mqim.mqtt._exceptions import MalformedPacket, UnsupportedProtocol

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
PUBREC: Final = 5
PUBREL: Final = 6
PUBCOMP: Final = 7
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

# CONNACK return codes (MQTT 3.2.2.3).
ACCEPTED: Final = 0
REFUSED_PROTOCOL: Final = 1
REFUSED_IDENTIFIER: Final = 2
REFUSED_UNAVAILABLE: Final = 3
REFUSED_BAD_CREDENTIALS: Final = 4
REFUSED_NOT_AUTHORIZED: Final = 5

SUBACK_FAILURE: Final = 0x80
BRIDGE_FLAG: Final = 0x80
"""Bit a Mosquitto bridge with `try_private true` sets in the protocol level (0x84)."""

U16 = struct.Struct("!H")
MAX_REMAINING: Final = 268_435_455  # four varint bytes (MQTT 2.2.3)


@dataclass(slots=True)
class Connect:
    """A decoded CONNECT packet."""

    protocol_level: int
    bridge: bool
    clean_session: bool
    keepalive: int
    client_id: str
    will_topic: str | None
    will_payload: bytes | None
    will_qos: int
    will_retain: bool
    username: str | None
    password: bytes | None


@dataclass(slots=True)
class Publish:
    """A decoded PUBLISH packet."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


def read_str(body: bytes, pos: int) -> tuple[str, int]:
    raw, pos = read_bin(body, pos)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not valid UTF-8 (MQTT-1.5.3-1)") from exc
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000 (MQTT-1.5.3-2)")
    return text, pos


def read_bin(body: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise MalformedPacket("truncated length prefix")
    (size,) = U16.unpack_from(body, pos)
    end = pos + 2 + size
    if end > len(body):
        raise MalformedPacket("truncated field")
    return bytes(body[pos + 2 : end]), end


def read_u16(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(body):
        raise MalformedPacket("truncated packet identifier")
    return U16.unpack_from(body, pos)[0], pos + 2


def _packet_id(body: bytes) -> int:
    if len(body) != 2:
        raise MalformedPacket("acknowledgement must hold exactly a packet identifier")
    pid: int = U16.unpack_from(body, 0)[0]
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    return pid


def decode_connect(flags: int, body: bytes) -> Connect:
    """Decode a CONNECT body.

    Raises:
        MalformedPacket: On any violation of MQTT 3.1 (level 3), 3.1.1 (level 4) or a bridge's
            level 0x83/0x84. An unsupported level raises `UnsupportedProtocol`.
    """
    if flags != 0:
        raise MalformedPacket("CONNECT with non-zero fixed header flags (MQTT-2.2.2-2)")
    name, pos = read_str(body, 0)
    if pos + 4 > len(body):
        raise MalformedPacket("truncated CONNECT variable header")
    level = body[pos]
    cflags = body[pos + 1]
    keepalive = U16.unpack_from(body, pos + 2)[0]
    pos += 4
    base_level = level & ~BRIDGE_FLAG
    if not ((name == "MQTT" and base_level == 4) or (name == "MQIsdp" and base_level == 3)):
        raise UnsupportedProtocol(f"protocol {name!r} level {level:#x} is not supported")
    if cflags & 0x01:
        raise MalformedPacket("CONNECT reserved flag set (MQTT-3.1.2-3)")
    clean = bool(cflags & 0x02)
    will_flag = bool(cflags & 0x04)
    will_qos = (cflags >> 3) & 0x03
    will_retain = bool(cflags & 0x20)
    has_password = bool(cflags & 0x40)
    has_username = bool(cflags & 0x80)
    if will_qos == 3:
        raise MalformedPacket("will QoS 3 (MQTT-3.1.2-14)")
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS/retain set without will flag (MQTT-3.1.2-13, 3.1.2-15)")
    if has_password and not has_username:
        raise MalformedPacket("password without username (MQTT-3.1.2-22)")
    client_id, pos = read_str(body, pos)
    will_topic: str | None = None
    will_payload: bytes | None = None
    if will_flag:
        will_topic, pos = read_str(body, pos)
        will_payload, pos = read_bin(body, pos)
    username: str | None = None
    password: bytes | None = None
    if has_username:
        username, pos = read_str(body, pos)
    if has_password:
        password, pos = read_bin(body, pos)
    if pos != len(body):
        raise MalformedPacket("trailing bytes after CONNECT payload")
    return Connect(
        protocol_level=base_level,
        bridge=bool(level & BRIDGE_FLAG),
        clean_session=clean,
        keepalive=keepalive,
        client_id=client_id,
        will_topic=will_topic,
        will_payload=will_payload,
        will_qos=will_qos,
        will_retain=will_retain,
        username=username,
        password=password,
    )


def decode_publish(flags: int, body: bytes) -> Publish:
    """Decode a PUBLISH body. Topic validity (wildcards, `$`) is the caller's decision."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
    topic, pos = read_str(body, 0)
    packet_id: int | None = None
    if qos:
        packet_id, pos = read_u16(body, pos)
        if packet_id == 0:
            raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    return Publish(
        topic=topic,
        payload=bytes(body[pos:]),
        qos=qos,
        retain=bool(flags & 0x01),
        dup=bool(flags & 0x08),
        packet_id=packet_id,
    )


def decode_subscribe(flags: int, body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """Decode a SUBSCRIBE body into its packet id and `(filter, requested QoS)` pairs."""
    if flags != 0x02:
        raise MalformedPacket("SUBSCRIBE fixed header flags must be 0010 (MQTT-3.8.1-1)")
    pid, pos = read_u16(body, 0)
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    topics: list[tuple[str, int]] = []
    while pos < len(body):
        topic_filter, pos = read_str(body, pos)
        if pos >= len(body):
            raise MalformedPacket("SUBSCRIBE filter without QoS byte")
        qos = body[pos]
        pos += 1
        if qos > 2:  # reserved bits set, or QoS 3
            raise MalformedPacket("SUBSCRIBE requested QoS byte invalid (MQTT-3.8.3-4)")
        topics.append((topic_filter, qos))
    if not topics:
        raise MalformedPacket("SUBSCRIBE without topic filters (MQTT-3.8.3-3)")
    return pid, topics


def decode_unsubscribe(flags: int, body: bytes) -> tuple[int, list[str]]:
    """Decode an UNSUBSCRIBE body into its packet id and filters."""
    if flags != 0x02:
        raise MalformedPacket("UNSUBSCRIBE fixed header flags must be 0010 (MQTT-3.10.1-1)")
    pid, pos = read_u16(body, 0)
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    filters: list[str] = []
    while pos < len(body):
        topic_filter, pos = read_str(body, pos)
        filters.append(topic_filter)
    if not filters:
        raise MalformedPacket("UNSUBSCRIBE without topic filters (MQTT-3.10.3-2)")
    return pid, filters


def decode_ack(packet_type: int, flags: int, body: bytes) -> int:
    """Decode PUBACK, PUBREC, PUBREL or PUBCOMP into its packet id."""
    expected = 0x02 if packet_type == PUBREL else 0
    if flags != expected:
        raise MalformedPacket(f"invalid fixed header flags for packet type {packet_type} (MQTT-2.2.2-2)")
    return _packet_id(body)


def encode_varint(n: int) -> bytes:
    """The variable-length "remaining length" encoding of `n` (MQTT 2.2.3)."""
    if n > MAX_REMAINING:
        raise ValueError("packet too large for MQTT")
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connack(*, session_present: bool, return_code: int) -> bytes:
    """CONNACK; session_present must be 0 when the connection is refused (MQTT-3.2.2-4)."""
    return bytes((CONNACK << 4, 2, 1 if session_present and return_code == 0 else 0, return_code))


def encode_str(text: str) -> bytes:
    """A length-prefixed UTF-8 string."""
    raw = text.encode()
    return U16.pack(len(raw)) + raw


def encode_publish(
    *,
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
) -> bytes:
    """PUBLISH. `topic` is the pre-encoded length-prefixed topic (see `encode_str`), so fan-out
    encodes it once for every recipient."""
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    if qos:
        assert packet_id is not None
        body_len = len(topic) + 2 + len(payload)
        return b"".join((bytes((first,)), encode_varint(body_len), topic, U16.pack(packet_id), payload))
    return b"".join((bytes((first,)), encode_varint(len(topic) + len(payload)), topic, payload))


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0010) or PUBCOMP."""
    first = (packet_type << 4) | (0x02 if packet_type == PUBREL else 0)
    return bytes((first, 2)) + U16.pack(packet_id)


def encode_suback(packet_id: int, return_codes: list[int]) -> bytes:
    """SUBACK with one return code per requested filter, in order (MQTT-3.8.4-5)."""
    return _frame(SUBACK << 4, U16.pack(packet_id) + bytes(return_codes))


def encode_unsuback(packet_id: int) -> bytes:
    """UNSUBACK."""
    return bytes((UNSUBACK << 4, 2)) + U16.pack(packet_id)


PINGRESP_BYTES: Final = bytes((PINGRESP << 4, 0))
