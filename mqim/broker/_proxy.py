"""PROXY protocol headers, versions 1 (text) and 2 (binary): an incremental, bounded parser. Pure.

A TCP load balancer (HAProxy `send-proxy`/`send-proxy-v2`, AWS NLB, nginx `proxy_protocol on`)
writes one header before the client's bytes, naming the client's own address. The broker reads
it only on listeners configured for it and only from configured proxy addresses
(`_proxy_gate.py`); everything else about the connection is unchanged.

Bounds: a v1 header is at most `V1_MAX_BYTES` (107, the specification's own bound, CRLF
included); a v2 header is 16 bytes plus its announced length, which may not exceed
`MAX_V2_PAYLOAD_BYTES` (addresses plus TLVs, which are skipped). Anything malformed raises
`ProxyHeaderError`; the caller closes the socket.

`LOCAL` (v2) and `UNKNOWN` (v1) headers, and v2 families other than TCP over IPv4/IPv6, carry
no client address: the connection keeps the proxy's own address (the specification's rule;
load balancers send them for health checks).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from mqim.broker._exceptions import ProxyHeaderError

V1_PREFIX: Final = b"PROXY "
V1_MAX_BYTES: Final = 107
"""Longest v1 header, `PROXY TCP6 <39> <39> <5> <5>\\r\\n` (the specification's bound)."""

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_BYTES: Final = 16
MAX_V2_PAYLOAD_BYTES: Final = 512
"""Largest v2 address-plus-TLV block accepted (TCP over IPv6 needs 36; the rest is TLVs)."""

_V2_FAMILIES: Final = {0x11: 4, 0x21: 6}  # TCP over IPv4, TCP over IPv6


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header said.

    Attributes:
        version: 1 or 2.
        source: The client's (host, port); None when the header names none (LOCAL, UNKNOWN).
        destination: The address the client connected to, likewise.
        length: Bytes the header took on the wire.
    """

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int


def could_be_header(data: bytes) -> bool:
    """Whether `data` (the first bytes of a connection) may start a PROXY header."""
    n = min(len(data), len(V2_SIGNATURE))
    return V1_PREFIX.startswith(data[: len(V1_PREFIX)]) or V2_SIGNATURE[:n] == data[:n]


class ProxyHeaderParser:
    """Feed the first bytes of a connection until a header is complete."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """Add bytes; returns (header, bytes after it) once complete, None while incomplete.

        Raises:
            ProxyHeaderError: Not a PROXY header, malformed, or over its bound.
        """
        buffer = self._buffer + data
        self._buffer = buffer
        if not could_be_header(buffer[: len(V2_SIGNATURE)]):
            raise ProxyHeaderError("connection does not start with a PROXY protocol header")
        if buffer[:1] == b"P":
            return _parse_v1(buffer)
        return _parse_v2(buffer)


def _parse_v1(buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
    end = buffer.find(b"\r\n", 0, V1_MAX_BYTES)
    if end < 0:
        if len(buffer) >= V1_MAX_BYTES:
            raise ProxyHeaderError(f"PROXY v1 header longer than {V1_MAX_BYTES} bytes")
        return None
    try:
        line = buffer[:end].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 header is not ASCII") from None
    parts = line.split(" ")
    length = end + 2
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, length), buffer[length:]
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY v1 header {line[:60]!r}")
    version = 4 if parts[1] == "TCP4" else 6
    source = (_v1_address(parts[2], version), _v1_port(parts[4]))
    destination = (_v1_address(parts[3], version), _v1_port(parts[5]))
    return ProxyHeader(1, source, destination, length), buffer[length:]


def _v1_address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"bad address {text[:40]!r} in PROXY v1 header") from None
    if address.version != version:
        raise ProxyHeaderError(f"address {text!r} does not match the PROXY v1 family")
    return str(address)


def _v1_port(text: str) -> int:
    # No sign, no leading zero (the specification), at most 65535.
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"bad port {text[:8]!r} in PROXY v1 header")
    return int(text)


def _parse_v2(buffer: bytes) -> tuple[ProxyHeader, bytes] | None:
    if len(buffer) < V2_FIXED_BYTES:
        return None
    version_command, family = buffer[12], buffer[13]
    (payload_length,) = struct.unpack_from("!H", buffer, 14)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY v2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY v2 header with command {command}")
    if payload_length > MAX_V2_PAYLOAD_BYTES:
        raise ProxyHeaderError(f"PROXY v2 header announces {payload_length} bytes (> {MAX_V2_PAYLOAD_BYTES})")
    length = V2_FIXED_BYTES + payload_length
    if len(buffer) < length:
        return None
    rest = buffer[length:]
    ip_version = _V2_FAMILIES.get(family)
    if command == 0 or ip_version is None:
        return ProxyHeader(2, None, None, length), rest  # LOCAL, or a family without a TCP address
    payload = buffer[V2_FIXED_BYTES:length]
    size = 4 if ip_version == 4 else 16
    if payload_length < 2 * size + 4:
        raise ProxyHeaderError("PROXY v2 address block too short for its family")
    src = ipaddress.ip_address(payload[:size])
    dst = ipaddress.ip_address(payload[size : 2 * size])
    src_port, dst_port = struct.unpack_from("!HH", payload, 2 * size)
    return ProxyHeader(2, (str(src), src_port), (str(dst), dst_port), length), rest


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header for (host, port) pairs (what a load balancer sends; used by tests and tools)."""
    family = "TCP6" if ipaddress.ip_address(source[0]).version == 6 else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(source: tuple[str, int], destination: tuple[str, int], *, tlv: bytes = b"") -> bytes:
    """A v2 PROXY-command header for TCP (optional raw TLV bytes appended)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x21 if src.version == 6 else 0x11
    payload = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1]) + tlv
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(payload)) + payload
