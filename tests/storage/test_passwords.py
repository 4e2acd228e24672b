"""scrypt password hashing."""

from __future__ import annotations

import base64

import pytest

from mqim.storage import hash_password, verify_password


def test_hash_is_self_describing() -> None:
    encoded = hash_password("s3cret")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32


def test_verify_round_trip() -> None:
    encoded = hash_password("s3cret")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert not verify_password("", encoded)


def test_salt_makes_hashes_differ() -> None:
    assert hash_password("same") != hash_password("same")


@pytest.mark.parametrize("password", ["", "ünïcødé ✓", "x" * 10_000, "\udcff lone surrogate"])
def test_unusual_passwords(password: str) -> None:
    assert verify_password(password, hash_password(password))


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain",
        "scrypt$16384$8$1$c2FsdA==",
        "bcrypt$16384$8$1$c2FsdA==$aGFzaA==",
        "scrypt$x$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$not*base64$aGFzaA==",
        "scrypt$16384$8$1$c2FsdA==$",
        "scrypt$16383$8$1$c2FsdA==$aGFzaA==",
        "scrypt$1099511627776$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$0$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$999$c2FsdA==$aGFzaA==",
    ],
)
def test_malformed_encodings_do_not_verify(encoded: str) -> None:
    assert verify_password("anything", encoded) is False


def test_other_parameters_still_verify() -> None:
    # A hash made with different (cheaper) parameters stays valid: the encoding carries them.
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=2**10, r=4, p=2, dklen=24)
    encoded = f"scrypt$1024$4$2${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert verify_password("pw", encoded)
    assert not verify_password("pw2", encoded)
