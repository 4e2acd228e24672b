"""The incremental MQTT stream decoder: bytes as the socket delivers them in, frames out. Pure.

Oversized packets are refused from their length header before the body is buffered; a PUBLISH
between `max_packet_bytes` and the hard limit streams through and comes out as an `Oversize`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mqim.mqtt._exceptions import MalformedPacket
from mqim.mqtt._packets import PUBLISH, U16, read_str, read_u16

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
            header = 2 + U16.unpack_from(head, 0)[0] + (2 if qos else 0)
            if header > self._length:
                raise MalformedPacket("PUBLISH ends inside its variable header")
            if header > self._max:
                raise MalformedPacket(f"PUBLISH header of {header} bytes exceeds the limit of {self._max}")
            self._header_len = header
            self._head_want = header + min(OVERSIZE_HEAD_BYTES, self._length - header)
            if len(head) < self._head_want:
                return
        raw = bytes(head)
        topic, pos = read_str(raw, 0)
        packet_id: int | None = None
        if qos:
            packet_id, pos = read_u16(raw, pos)
            if packet_id == 0:
                raise MalformedPacket("packet identifier 0 (MQTT-2.3.1-1)")
        self._pending = Oversize(
            topic=topic, qos=qos, packet_id=packet_id, payload_head=raw[pos:], length=self._length
        )
