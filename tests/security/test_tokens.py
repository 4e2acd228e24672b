"""Signed tokens (HMAC-SHA256 JWT): signing, verification, refusals, key rotation, clock skew."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mqim.auth import (
    InvalidToken,
    Keyring,
    KeyringError,
    KeyringFile,
    StorageAuthenticator,
    TokenAuthenticator,
    TokenKey,
    ensure_keyring,
    issue_token,
    load_keyring,
    looks_like_token,
    save_keyring,
    unverified_claims,
    verify_token,
)
from mqim.auth._authenticator import ConnectRequest
from mqim.auth._b64url import b64url_decode, b64url_encode
from mqim.auth._token_auth import UNKNOWN_KID_RELOAD_INTERVAL_S
from mqim.auth._tokens import MAX_TOKEN_CHARS
from mqim.cli import app
from mqim.storage import SqliteStorage
from tests.conftest import PASSWORD
from tests.security.conftest import settings, started
from tests.support.mqtt import Paho

NOW = 1_700_000_000


def ring(*kids: str) -> Keyring:
    return Keyring(
        keys=[TokenKey(kid=k, secret=bytes([i + 1]) * 32, created=NOW + i) for i, k in enumerate(kids)]
    )


def b64(obj: object) -> str:
    return b64url_encode(json.dumps(obj, separators=(",", ":")).encode())


def forge(header: object, claims: object, secret: bytes) -> str:
    """A token built by hand (what an attacker can do with or without the key)."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(sig)}"


def claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"sub": "alice", "aud": "mqim", "iat": NOW, "exp": NOW + 3600, "jti": "j-1"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def reason(keyring: Keyring, token: str, *, audience: str = "mqim", now: float = NOW + 10) -> str:
    with pytest.raises(InvalidToken) as info:
        verify_token(keyring, token, audience=audience, now=now)
    return info.value.reason


def test_issue_then_verify_round_trip() -> None:
    keys = ring("k1")
    token = issue_token(keys, subject="alice", audience="mqim", ttl_s=60, now=NOW, token_id="t-1")
    got = verify_token(keys, token, audience="mqim", now=NOW + 1)
    assert (got.subject, got.audience, got.token_id, got.kid) == ("alice", ("mqim",), "t-1", "k1")
    assert got.expires_at == NOW + 60
    assert looks_like_token(token)
    assert unverified_claims(token)["jti"] == "t-1"


def test_each_token_gets_its_own_id() -> None:
    keys = ring("k1")
    a, b = (issue_token(keys, subject="alice", audience="mqim", ttl_s=60, now=NOW) for _ in range(2))
    assert (
        verify_token(keys, a, audience="mqim", now=NOW).token_id
        != verify_token(keys, b, audience="mqim", now=NOW).token_id
    )


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "", None])
def test_any_algorithm_but_hs256_is_refused(alg: str | None) -> None:
    keys = ring("k1")
    header = {"alg": alg, "typ": "JWT", "kid": "k1"}
    good_sig = forge(header, claims(), keys.keys[0].secret)
    unsigned = f"{b64(header)}.{b64(claims())}."  # the classic alg=none form, empty signature
    assert reason(keys, good_sig) == "unsupported_alg"
    with pytest.raises(InvalidToken):
        verify_token(keys, unsigned, audience="mqim", now=NOW)


def test_tampered_claims_break_the_signature() -> None:
    keys = ring("k1")
    token = issue_token(keys, subject="alice", audience="mqim", ttl_s=60, now=NOW)
    header, _, sig = token.split(".")
    tampered = f"{header}.{b64(claims(sub='bob'))}.{sig}"
    assert reason(keys, tampered) == "bad_signature"
    # A different key (e.g. another deployment's) does not verify either.
    foreign = forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(), b"x" * 32)
    assert reason(keys, foreign) == "bad_signature"


def test_signature_bit_flips_are_refused() -> None:
    keys = ring("k1")
    token = issue_token(keys, subject="alice", audience="mqim", ttl_s=60, now=NOW)
    head, body, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    for index in (0, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[index] ^= 1
        assert reason(keys, f"{head}.{body}.{b64url_encode(bytes(flipped))}") == "bad_signature"
    assert reason(keys, f"{head}.{body}.{b64url_encode(bytes(raw[:-1]))}") == "bad_signature"


def test_expiry_and_clock_skew() -> None:
    keys = ring("k1")
    token = issue_token(keys, subject="alice", audience="mqim", ttl_s=60, now=NOW)
    # Within the leeway after exp (the broker's clock may run ahead of the issuer's): accepted.
    verify_token(keys, token, audience="mqim", now=NOW + 60 + 59, leeway_s=60)
    assert reason(keys, token, now=NOW + 60 + 60) == "expired"
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(keys, token, audience="mqim", now=NOW + 61, leeway_s=0)
    # Issued "in the future" beyond the leeway: refused; within it: accepted.
    verify_token(keys, token, audience="mqim", now=NOW - 30, leeway_s=60)
    assert reason(keys, token, now=NOW - 61) == "not_yet_valid"


def test_not_before_is_honoured() -> None:
    keys = ring("k1")
    token = forge({"alg": "HS256", "kid": "k1"}, claims(nbf=NOW + 1000), keys.keys[0].secret)
    assert reason(keys, token, now=NOW) == "not_yet_valid"
    assert verify_token(keys, token, audience="mqim", now=NOW + 1000).not_before == NOW + 1000


def test_audience_must_name_this_broker() -> None:
    keys = ring("k1")
    token = issue_token(keys, subject="alice", audience="other", ttl_s=60, now=NOW)
    assert reason(keys, token) == "wrong_audience"
    listed = forge({"alg": "HS256", "kid": "k1"}, claims(aud=["x", "mqim"]), keys.keys[0].secret)
    assert verify_token(keys, listed, audience="mqim", now=NOW).audience == ("x", "mqim")


@pytest.mark.parametrize(
    "bad",
    [
        {"sub": None},
        {"sub": ""},
        {"sub": 7},
        {"jti": None},
        {"exp": None},
        {"exp": "tomorrow"},
        {"exp": True},
        {"iat": None},
        {"aud": None},
        {"aud": []},
        {"aud": [1]},
    ],
)
def test_claims_of_the_wrong_shape_are_refused(bad: dict[str, object]) -> None:
    keys = ring("k1")
    token = forge({"alg": "HS256", "kid": "k1"}, claims(**bad), keys.keys[0].secret)
    assert reason(keys, token) == "bad_claims"


def test_header_must_be_exactly_ours() -> None:
    keys = ring("k1")
    secret = keys.keys[0].secret
    assert reason(keys, forge({"alg": "HS256"}, claims(), secret)) == "unknown_key"
    assert reason(keys, forge({"alg": "HS256", "kid": "k9"}, claims(), secret)) == "unknown_key"
    assert reason(keys, forge({"alg": "HS256", "kid": "k1", "crit": ["x"]}, claims(), secret)) == "malformed"
    assert (
        reason(keys, forge({"alg": "HS256", "kid": "k1", "jku": "http://x"}, claims(), secret)) == "malformed"
    )
    assert reason(keys, forge({"alg": "HS256", "kid": "k1", "typ": "JWE"}, claims(), secret)) == "malformed"


def test_duplicate_json_members_are_refused() -> None:
    keys = ring("k1")
    header = b64url_encode(b'{"alg":"HS256","kid":"k1","alg":"none"}')
    body = b64(claims())
    sig = hmac.new(keys.keys[0].secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    assert reason(keys, f"{header}.{body}.{b64url_encode(sig)}") == "malformed"
    dup_claims = b64url_encode(b'{"sub":"bob","sub":"alice","aud":"mqim","iat":1,"exp":9999999999,"jti":"j"}')
    head = b64({"alg": "HS256", "kid": "k1"})
    sig = hmac.new(keys.keys[0].secret, f"{head}.{dup_claims}".encode(), hashlib.sha256).digest()
    assert reason(keys, f"{head}.{dup_claims}.{b64url_encode(sig)}") == "malformed"


def test_json_nested_too_deep_is_malformed() -> None:
    # Within MAX_TOKEN_CHARS, deeper than the JSON parser's recursion limit.
    keys = ring("k1")
    deep = b64url_encode(b"[" * 2500)
    assert reason(keys, f"{deep}.{b64(claims())}.AA") == "malformed"
    head = b64({"alg": "HS256", "kid": "k1"})
    sig = hmac.new(keys.keys[0].secret, f"{head}.{deep}".encode(), hashlib.sha256).digest()
    assert reason(keys, f"{head}.{deep}.{b64url_encode(sig)}") == "malformed"
    with pytest.raises(InvalidToken):
        unverified_claims(f"{head}.{deep}.{b64url_encode(sig)}")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "###.###.###",
        "eyJhbGciOiJIUzI1NiJ9=.e30.AA",  # padding
        "x" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_malformed_tokens(token: str) -> None:
    assert reason(ring("k1"), token) == "malformed"


def test_non_canonical_base64_is_refused() -> None:
    # "QQ" and "QR" decode to the same byte; only the canonical spelling is accepted.
    assert b64url_decode("QQ") == b"A"
    with pytest.raises(InvalidToken):
        b64url_decode("QR")


def test_rotation_newest_signs_older_keys_still_verify() -> None:
    first = Keyring().rotated(now=NOW, keep=3)
    old_token = issue_token(first, subject="alice", audience="mqim", ttl_s=600, now=NOW)
    second = first.rotated(now=NOW + 1, keep=3)
    new_token = issue_token(second, subject="alice", audience="mqim", ttl_s=600, now=NOW)
    assert second.signing_key is not None
    assert second.signing_key is second.keys[-1]
    assert verify_token(second, new_token, audience="mqim", now=NOW).kid == second.signing_key.kid
    assert verify_token(second, old_token, audience="mqim", now=NOW).kid == first.keys[0].kid
    # Rotating the old key out refuses its tokens.
    third = second.rotated(now=NOW + 2, keep=1)
    assert len(third) == 1
    assert reason(third, old_token, now=NOW) == "unknown_key"
    assert reason(third, new_token, now=NOW) == "unknown_key"


def test_keyring_limits() -> None:
    with pytest.raises(KeyringError):
        TokenKey(kid="k", secret=b"short", created=NOW)
    with pytest.raises(KeyringError):
        Keyring(keys=[TokenKey(kid="k", secret=b"x" * 32, created=1)] * 2)
    with pytest.raises(KeyringError):
        Keyring().rotated(now=NOW, keep=0)
    with pytest.raises(KeyringError):
        issue_token(Keyring(), subject="a", audience="b", ttl_s=1, now=NOW)
    with pytest.raises(ValueError, match="ttl"):
        issue_token(ring("k1"), subject="a", audience="b", ttl_s=0, now=NOW)


def test_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token-keys.json"
    assert len(load_keyring(path)) == 0
    created = ensure_keyring(path, now=NOW)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_keyring(path, now=NOW + 5).keys == created.keys  # not replaced
    save_keyring(path, created.rotated(now=NOW + 1))
    loaded = load_keyring(path)
    assert [k.kid for k in loaded.keys] == [k.kid for k in created.keys] + [loaded.keys[-1].kid]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "secret" not in repr(loaded.keys[0])  # never printed


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"version": 2, "keys": []}', '{"version": 1, "keys": [{"kid": "k"}]}'],
)
def test_bad_key_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(KeyringError):
        load_keyring(path)


async def test_keyring_file_reloads_on_change_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    watched = KeyringFile(path=path)
    assert await watched.refresh() is True  # missing file: empty keyring
    assert len(watched.keyring) == 0
    assert await watched.refresh() is False
    save_keyring(path, Keyring().rotated(now=NOW))
    assert await watched.refresh() is True
    assert len(watched.keyring) == 1
    path.write_text("garbage that is longer than before")
    assert await watched.refresh() is False
    assert len(watched.keyring) == 1


@given(st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert "=" not in encoded
    if data:
        assert b64url_decode(encoded) == data


@given(st.text(max_size=80))
def test_verify_never_raises_anything_but_invalid_token(text: str) -> None:
    with contextlib.suppress(InvalidToken):
        verify_token(ring("k1"), text, audience="mqim", now=NOW)


def test_b64_helper_matches_stdlib() -> None:
    assert b64url_encode(b"\xfb\xff") == base64.urlsafe_b64encode(b"\xfb\xff").decode().rstrip("=")


# -- a token signed by a new key works the moment it is issued ---------------------------------


async def test_token_from_a_freshly_rotated_key_connects_at_once(tmp_path: Path) -> None:
    runner = CliRunner(env={k: None for k in os.environ if k.startswith("MQIM_")})

    def cli(*args: str) -> str:
        result = runner.invoke(app, [*args, "--data-dir", str(tmp_path / "data")])
        assert result.exit_code == 0, result.stderr
        return result.stdout.strip()

    # A poll interval far beyond the test: only the unknown-kid re-read can find the new key.
    async with started(tmp_path / "data", settings=settings(policy_poll_interval_s=3600.0)) as server:
        await server.storage.add_user("alice", password=PASSWORD)
        assert server.broker is not None
        chain = server.broker.authenticator
        tokens = chain.method(TokenAuthenticator)  # type: ignore[attr-defined]
        passwords = chain.method(StorageAuthenticator)  # type: ignore[attr-defined]
        assert isinstance(tokens, TokenAuthenticator)
        assert isinstance(passwords, StorageAuthenticator)
        assert len(tokens.keys.keyring) == 0  # the server started before any key existed
        # The CLI in a thread: it runs its own event loop (the storage check of `issue`).
        await asyncio.to_thread(cli, "token", "rotate")
        token = await asyncio.to_thread(cli, "token", "issue", "alice", "--ttl", "600")
        client = Paho(port=server.port(), user="alice", password=token, client_id="t1")
        try:
            await client.connect(expect_rc=0)  # at once: no poll in between
        finally:
            client.close()
        assert tokens.kid_reloads == 1
        assert passwords.stats.checks == 0  # the token decided; no password check ran


async def test_unknown_kids_re_read_the_key_file_at_most_once_per_interval(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "keys.json"
    save_keyring(path, Keyring().rotated(now=NOW))
    async with SqliteStorage(path=tmp_path / "db.sqlite") as storage:
        await storage.add_user("alice", password="pw-123456")
        auth = TokenAuthenticator(
            storage=storage, keys=KeyringFile(path=path), audience="mqim", monotonic=lambda: now[0]
        )
        await auth.refresh()
        stranger = issue_token(
            Keyring().rotated(now=NOW), subject="alice", audience="mqim", ttl_s=60, now=int(time.time())
        )

        async def attempt() -> object:
            request = ConnectRequest(
                username="alice",
                password=stranger.encode(),
                client_id="c",
                listener="default",
                remote_address="127.0.0.1:1",
            )
            return await auth.authenticate(request)

        assert await attempt() is None
        assert auth.kid_reloads == 1
        for _ in range(20):  # a flood of made-up kids within the interval: no further re-read
            assert await attempt() is None
        assert auth.kid_reloads == 1
        now[0] += UNKNOWN_KID_RELOAD_INTERVAL_S
        assert await attempt() is None
        assert auth.kid_reloads == 2
