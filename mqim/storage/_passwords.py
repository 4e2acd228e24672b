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


def verify_password(password: str, encoded: str) -> bool:
    """Check `password` against an encoded hash in constant time.

    Args:
        password: The clear-text candidate.
        encoded: A value produced by `hash_password`.

    Returns:
        True if it matches; False if it does not or `encoded` is malformed.
    """
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
