"""MQTT 3.1.1 packet codec: pure functions over bytes, no I/O.

Decoding is incremental (`PacketDecoder.feed`) so a connection can hand over whatever the socket
delivered; encoding builds whole packets as `bytes`. Spec references are to MQTT 3.1.1 (OASIS).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from mqim.broker._exceptions import MalformedPacket

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

_U16 = struct.Struct("!H")
_MAX_REMAINING: Final = 268_435_455  # four varint bytes (MQTT 2.2.3)


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


def _read_str(body: bytes, pos: int) -> tuple[str, int]:
    raw, pos = _read_bin(body, pos)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not valid UTF-8 (MQTT-1.5.3-1)") from exc
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000 (MQTT-1.5.3-2)")
    return text, pos


def _read_bin(body: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 2 > len(body):
        raise MalformedPacket("truncated length prefix")
    (size,) = _U16.unpack_from(body, pos)
    end = pos + 2 + size
    if end > len(body):
        raise MalformedPacket("truncated field")
    return bytes(body[pos + 2 : end]), end


def _read_u16(body: bytes, pos: int) -> tuple[int, int]:
    if pos + 2 > len(body):
        raise MalformedPacket("truncated packet identifier")
    return _U16.unpack_from(body, pos)[0], pos + 2


def _packet_id(body: bytes) -> int:
    if len(body) != 2:
        raise MalformedPacket("acknowledgement must hold exactly a packet identifier")
    pid: int = _U16.unpack_from(body, 0)[0]
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    return pid


OVERSIZE_HEAD_BYTES: Final = 1024
"""Payload bytes an oversize PUBLISH keeps (enough for a request's reference near the start)."""


@dataclass(frozen=True, slots=True)
class Oversize:
    """A PUBLISH longer than `max_packet_bytes` (but within the hard limit) that was discarded.

    `PacketDecoder` emits it as the body of a `(PUBLISH, flags, Oversize)` frame once the last
    byte of the packet has been consumed, so the connection can still acknowledge it (PUBACK or
    PUBREC) and tell the sender why it was dropped; the client then stops sending it again.

    Attributes:
        topic: The topic name, decoded and checked like any PUBLISH topic (MQTT-1.5.3-1/-2).
        qos: 0, 1 or 2.
        packet_id: The packet identifier (QoS 1 and 2), else None.
        payload_head: The first `OVERSIZE_HEAD_BYTES` (or fewer) bytes of the payload.
        length: The packet's remaining length (variable header and payload), in bytes.
    """

    topic: str
    qos: int
    packet_id: int | None
    payload_head: bytes
    length: int


Frame = tuple[int, int, "bytes | Oversize"]
"""`(packet_type, flags, body)`; the body is an `Oversize` only for a discarded PUBLISH."""


class PacketDecoder:
    """Splits a byte stream into `(packet_type, flags, body)` frames.

    Args:
        max_packet_bytes: Largest remaining length buffered; bigger packets are refused (or, for
            a PUBLISH within `hard_limit_bytes`, discarded) before their body is buffered, so a
            client cannot make the broker allocate without limit.
        hard_limit_bytes: Largest remaining length of a PUBLISH that is discarded instead of
            refused: it streams through keeping only its head (at most the header, itself
            within `max_packet_bytes`, plus `OVERSIZE_HEAD_BYTES`), and comes out as an
            `Oversize` body. None, or a value not above `max_packet_bytes`, means no PUBLISH is
            discarded: every packet over `max_packet_bytes` is refused.
    """

    __slots__ = (
        "_buf",
        "_hard",
        "_head",
        "_head_want",
        "_header_len",
        "_left",
        "_length",
        "_max",
        "_over_flags",
        "_pending",
    )

    def __init__(self, *, max_packet_bytes: int, hard_limit_bytes: int | None = None) -> None:
        self._buf = bytearray()
        self._max = max_packet_bytes
        self._hard = max_packet_bytes if hard_limit_bytes is None else max(hard_limit_bytes, max_packet_bytes)
        # State of the PUBLISH being discarded; `_left` is 0 when there is none.
        self._left = 0  # bytes of its body not yet consumed
        self._head = bytearray()
        self._head_want = 0  # head bytes wanted: 2 until the topic length is known
        self._header_len = 0  # topic and packet id bytes; 0 until the topic length is known
        self._length = 0  # its remaining length
        self._over_flags = 0
        self._pending: Oversize | None = None  # set once the head is complete

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return every complete frame, in order.

        A discarded PUBLISH comes out as `(PUBLISH, flags, Oversize)` once its last byte is fed.

        Raises:
            MalformedPacket: The stream breaks MQTT framing, holds a packet over the limits, or
                an oversize PUBLISH has a malformed topic or packet identifier.
        """
        frames: list[Frame] = []
        if self._left:
            # Inside a discarded PUBLISH: consume straight from `data`, never buffering it.
            used = self._discard(data, 0, len(data), frames)
            if self._left:
                return frames
            data = data[used:]
        buf = self._buf
        buf += data
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            first = buf[pos]
            remaining = 0
            multiplier = 1
            i = pos + 1
            complete = False
            for _ in range(4):
                if i >= size:
                    break
                byte = buf[i]
                i += 1
                remaining += (byte & 0x7F) * multiplier
                if not byte & 0x80:
                    complete = True
                    break
                multiplier *= 128
            else:
                raise MalformedPacket("remaining length longer than four bytes (MQTT-2.2.3)")
            if not complete:
                break  # the length itself is not complete yet
            if remaining > self._max:
                self._start_discard(first, remaining)
                pos = self._discard(buf, i, size, frames)
                if self._left:
                    break
                continue
            end = i + remaining
            if end > size:
                break
            frames.append((first >> 4, first & 0x0F, bytes(buf[i:end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete: a partial packet, or the head kept of a
        discarded PUBLISH (0 while only its fixed header has arrived: see `discarding`)."""
        return len(self._buf) + len(self._head)

    @property
    def discarding(self) -> bool:
        """True while the body of an oversize PUBLISH is streaming through."""
        return self._left > 0

    def _start_discard(self, first: int, remaining: int) -> None:
        if first >> 4 != PUBLISH or remaining > self._hard:
            limit = self._hard if first >> 4 == PUBLISH else self._max
            raise MalformedPacket(f"packet of {remaining} bytes exceeds the limit of {limit}")
        if (first >> 1) & 0x03 == 3:
            raise MalformedPacket("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
        if remaining < 2:
            raise MalformedPacket("PUBLISH ends inside its variable header")
        self._left = self._length = remaining
        self._over_flags = first & 0x0F
        self._header_len = 0
        self._head_want = 2  # the topic's length prefix comes first

    def _discard(self, src: bytes | bytearray, pos: int, end: int, frames: list[Frame]) -> int:
        """Consume the discarded PUBLISH from `src[pos:end]`; return the position after it.

        Appends its frame to `frames` when its last byte is consumed.
        """
        head = self._head
        while self._left and pos < end:
            if self._pending is None:
                take = min(self._head_want - len(head), end - pos)
                head += src[pos : pos + take]
                if len(head) == self._head_want:
                    self._head_progress()
            else:
                take = min(self._left, end - pos)
            pos += take
            self._left -= take
        if not self._left:
            if self._pending is None:
                raise MalformedPacket("PUBLISH ends inside its variable header")
            frames.append((PUBLISH, self._over_flags, self._pending))
            self._pending = None
            head.clear()
        return pos

    def _head_progress(self) -> None:
        """The head holds `_head_want` bytes: learn the header's length, or decode the head."""
        head = self._head
        qos = (self._over_flags >> 1) & 0x03
        if not self._header_len:
            # The topic's length prefix arrived (MQTT-3.3.2-1): now the whole head is known.
            header = 2 + _U16.unpack_from(head, 0)[0] + (2 if qos else 0)
            if header > self._length:
                raise MalformedPacket("PUBLISH ends inside its variable header")
            if header > self._max:
                raise MalformedPacket(f"PUBLISH header of {header} bytes exceeds the limit of {self._max}")
            self._header_len = header
            self._head_want = header + min(OVERSIZE_HEAD_BYTES, self._length - header)
            if len(head) < self._head_want:
                return
        raw = bytes(head)
        topic, pos = _read_str(raw, 0)
        packet_id: int | None = None
        if qos:
            packet_id, pos = _read_u16(raw, pos)
            if packet_id == 0:
                raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
        self._pending = Oversize(
            topic=topic, qos=qos, packet_id=packet_id, payload_head=raw[pos:], length=self._length
        )


def decode_connect(flags: int, body: bytes) -> Connect:
    """Decode a CONNECT body.

    Raises:
        MalformedPacket: On any violation of MQTT 3.1 (level 3), 3.1.1 (level 4) or a bridge's
            level 0x83/0x84. An unsupported level raises `UnsupportedProtocol`.
    """
    if flags != 0:
        raise MalformedPacket("CONNECT with non-zero fixed header flags (MQTT-2.2.2-2)")
    name, pos = _read_str(body, 0)
    if pos + 4 > len(body):
        raise MalformedPacket("truncated CONNECT variable header")
    level = body[pos]
    cflags = body[pos + 1]
    keepalive = _U16.unpack_from(body, pos + 2)[0]
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
    client_id, pos = _read_str(body, pos)
    will_topic: str | None = None
    will_payload: bytes | None = None
    if will_flag:
        will_topic, pos = _read_str(body, pos)
        will_payload, pos = _read_bin(body, pos)
    username: str | None = None
    password: bytes | None = None
    if has_username:
        username, pos = _read_str(body, pos)
    if has_password:
        password, pos = _read_bin(body, pos)
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


class UnsupportedProtocol(MalformedPacket):
    """A CONNECT for a protocol level the broker does not speak (answered with CONNACK 1)."""


def decode_publish(flags: int, body: bytes) -> Publish:
    """Decode a PUBLISH body. Topic validity (wildcards, `$`) is the caller's decision."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3 (MQTT-3.3.1-4)")
    topic, pos = _read_str(body, 0)
    packet_id: int | None = None
    if qos:
        packet_id, pos = _read_u16(body, pos)
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
    pid, pos = _read_u16(body, 0)
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    topics: list[tuple[str, int]] = []
    while pos < len(body):
        topic_filter, pos = _read_str(body, pos)
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
    pid, pos = _read_u16(body, 0)
    if pid == 0:
        raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
    filters: list[str] = []
    while pos < len(body):
        topic_filter, pos = _read_str(body, pos)
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


def _varint(n: int) -> bytes:
    if n > _MAX_REMAINING:
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
    return bytes((first,)) + _varint(len(body)) + body


def encode_connack(*, session_present: bool, return_code: int) -> bytes:
    """CONNACK; session_present must be 0 when the connection is refused (MQTT-3.2.2-4)."""
    return bytes((CONNACK << 4, 2, 1 if session_present and return_code == 0 else 0, return_code))


def encode_str(text: str) -> bytes:
    """A length-prefixed UTF-8 string."""
    raw = text.encode()
    return _U16.pack(len(raw)) + raw


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
        return b"".join((bytes((first,)), _varint(body_len), topic, _U16.pack(packet_id), payload))
    return b"".join((bytes((first,)), _varint(len(topic) + len(payload)), topic, payload))


def encode_ack(packet_type: int, packet_id: int) -> bytes:
    """PUBACK, PUBREC, PUBREL (flags 0010) or PUBCOMP."""
    first = (packet_type << 4) | (0x02 if packet_type == PUBREL else 0)
    return bytes((first, 2)) + _U16.pack(packet_id)


def encode_suback(packet_id: int, return_codes: list[int]) -> bytes:
    """SUBACK with one return code per requested filter, in order (MQTT-3.8.4-5)."""
    return _frame(SUBACK << 4, _U16.pack(packet_id) + bytes(return_codes))


def encode_unsuback(packet_id: int) -> bytes:
    """UNSUBACK."""
    return bytes((UNSUBACK << 4, 2)) + _U16.pack(packet_id)


PINGRESP_BYTES: Final = bytes((PINGRESP << 4, 0))
