"""Strict unpadded base64url (RFC 7515 section 2): one spelling for each byte string.

Token parts and the key file's secrets use it; padding, characters outside the alphabet, an
impossible length and non-zero unused trailing bits are refused.
"""

from __future__ import annotations

import base64
import binascii

from mqim.auth._exceptions import InvalidToken

B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
"""The base64url characters (RFC 4648 section 5), without the padding `=`."""


def b64url_encode(data: bytes) -> str:
    """Encode without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly.

    Raises:
        InvalidToken: ("malformed") on padding, characters outside the alphabet, an impossible
            length, or non-zero unused trailing bits (a second spelling of the same bytes).
    """
    if not text or any(ch not in B64_ALPHABET for ch in text) or len(text) % 4 == 1:
        raise InvalidToken("malformed", "not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed", "not unpadded base64url") from exc
    if b64url_encode(data) != text:
        raise InvalidToken("malformed", "non-canonical base64url")
    return data
