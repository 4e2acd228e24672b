"""The client side of MQTT 3.1.1: CONNECT, SUBSCRIBE and DISCONNECT out, CONNACK and SUBACK in. Pure.

For mqim's own MQTT clients (the logic service's bus): what a broker never sends or decodes.
"""

from __future__ import annotations

from typing import Final

from mqim.mqtt._exceptions import MalformedPacket
from mqim.mqtt._packets import CONNECT, DISCONNECT, PINGREQ, SUBSCRIBE, U16, encode_str, encode_varint

PINGREQ_BYTES: Final = bytes((PINGREQ << 4, 0))
DISCONNECT_BYTES: Final = bytes((DISCONNECT << 4, 0))

_LEVEL_311: Final = 4


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connect(
    *,
    client_id: str,
    clean_session: bool,
    keepalive: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT at protocol level 4 (MQTT 3.1.1), without a will."""
    flags = 0x02 if clean_session else 0
    payload = [encode_str(client_id)]
    if username is not None:
        flags |= 0x80
        payload.append(encode_str(username))
        if password is not None:
            flags |= 0x40
            raw = password.encode("utf-8")
            payload.append(U16.pack(len(raw)) + raw)
    header = encode_str("MQTT") + bytes((_LEVEL_311, flags)) + U16.pack(keepalive)
    return _frame(CONNECT << 4, header + b"".join(payload))


def encode_subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (fixed header flags 0b0010, MQTT-3.8.1-1)."""
    body = U16.pack(packet_id) + b"".join(encode_str(f) + bytes((qos,)) for f, qos in filters)
    return _frame((SUBSCRIBE << 4) | 0x02, body)


def decode_connack(flags: int, body: bytes) -> tuple[bool, int]:
    """`(session_present, return_code)` of a CONNACK body."""
    if flags != 0 or len(body) != 2 or body[0] & 0xFE:
        raise MalformedPacket("malformed CONNACK")
    return bool(body[0] & 1), body[1]


def decode_suback(flags: int, body: bytes) -> tuple[int, list[int]]:
    """`(packet_id, return codes)` of a SUBACK body."""
    if flags != 0 or len(body) < 3:
        raise MalformedPacket("malformed SUBACK")
    return U16.unpack_from(body, 0)[0], list(body[2:])
