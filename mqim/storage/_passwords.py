"""Password hashing with scrypt, in a self-describing encoding.

An encoded hash reads ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``, so the cost parameters can be
raised later without invalidating stored hashes. Both functions are CPU-bound and synchronous:
async callers run them through `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time

from cachetools import LRUCache

SCHEME = "scrypt"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32

# Bounds on the parameters `verify_password` accepts from an encoding, so a corrupt or hostile row
# cannot make one check take gigabytes or minutes. 128 * n * r bytes must stay under _MAXMEM.
_MAX_N = 2**20
_MAX_R = 16
_MAX_P = 16
_MAXMEM = 256 * 1024 * 1024 + 1024 * 1024

# A well-formed encoding that matches no password: verifying against it costs the same work as
# a real check, so unknown users and real users take the same time.
DUMMY_HASH = (
    f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
    f"{base64.b64encode(bytes(SALT_BYTES)).decode()}${base64.b64encode(bytes(HASH_BYTES)).decode()}"
)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=dklen
    )


def hash_password(password: str) -> str:
    """Hash `password` with scrypt and a fresh random salt.

    Args:
        password: The clear-text password.

    Returns:
        The encoded hash, ``scrypt$16384$8$1$<salt b64>$<hash b64>``.
    """
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return "$".join(
        (
            SCHEME,
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(digest).decode("ascii"),
        )
    )


class _VerifiedCache:
    """Bounded memory of (hash, password) pairs that verified recently.

    scrypt is deliberately slow (~30 ms): a reconnect storm of thousands of clients would queue
    for seconds. Only successful checks are remembered, keyed by an HMAC under a per-process
    random key (neither the password nor a fast hash of it is kept), so a hit proves nothing
    to someone who does not already hold the password. A new password means a new encoded
    hash, so old entries are never consulted again and age out.
    """

    def __init__(self, *, max_entries: int, ttl_s: float) -> None:
        self._key = secrets.token_bytes(32)
        self._ttl = ttl_s
        self._entries: LRUCache[bytes, float] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()

    def _digest(self, password: str, encoded: str) -> bytes:
        msg = encoded.encode() + b"\x00" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def hit(self, password: str, encoded: str) -> bool:
        digest = self._digest(password, encoded)
        now = time.monotonic()
        with self._lock:
            expires = self._entries.get(digest)  # a hit is a use: the entry becomes the most recent
            if expires is None:
                return False
            if expires < now:
                del self._entries[digest]
                return False
            return True

    def remember(self, password: str, encoded: str) -> None:
        digest = self._digest(password, encoded)
        with self._lock:
            # Full: the least recently used entry leaves to make room.
            self._entries[digest] = time.monotonic() + self._ttl

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


VERIFIED_CACHE_ENTRIES = 100_000
"""Most remembered successful checks (about 100 bytes each)."""
VERIFIED_CACHE_TTL_S = 600.0
"""How long a successful check is remembered."""

verified_cache = _VerifiedCache(max_entries=VERIFIED_CACHE_ENTRIES, ttl_s=VERIFIED_CACHE_TTL_S)


def verify_password(password: str, encoded: str) -> bool:
    """Check `password` against an encoded hash in constant time.

    A pair that verified within `VERIFIED_CACHE_TTL_S` is answered from `verified_cache`
    without running scrypt again.

    Args:
        password: The clear-text candidate.
        encoded: A value produced by `hash_password`.

    Returns:
        True if it matches; False if it does not or `encoded` is malformed.
    """
    if verified_cache.hit(password, encoded):
        return True
    if _verify_slow(password, encoded):
        verified_cache.remember(password, encoded)
        return True
    return False


def _verify_slow(password: str, encoded: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        return False
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return False
    if not salt or not expected:
        return False
    try:
        digest = _scrypt(password, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)
