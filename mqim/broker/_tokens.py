"""Signed access tokens: HMAC-SHA256 JSON Web Tokens (RFC 7519 in JWS compact form, RFC 7515).

Only what mqim issues is accepted, and nothing else:

- the header is exactly `{"alg":"HS256","typ":"JWT","kid":...}` in content: `alg` must be
  `HS256` (`none`, RS*/ES* and the rest are refused, so no algorithm confusion is possible),
  `kid` must name a key of the keyring, `typ` if present must be `JWT`, and any other header
  field (`crit`, `jku`, ...) is refused;
- the signature is checked (constant-time) before any claim is looked at;
- claims `sub`, `aud` (a string or a list of strings), `exp`, `iat` and `jti` are required,
  `nbf` is optional; `exp`, `nbf` and `iat` are compared with the caller's `now` allowing
  `leeway_s` seconds of clock skew;
- JSON objects with duplicate names, base64url with padding or non-canonical trailing bits, and
  tokens longer than `MAX_TOKEN_CHARS` are malformed.

Keys live in a `Keyring`: several keys are accepted at once (each token names its key with
`kid`), the newest signs. Rotation adds a new key and keeps the newest `keep` ones, so tokens
signed by a recently retired key stay valid until they expire or the key is dropped.

The key file (`token-keys.json` in the data directory by default) is JSON, written atomically
with mode 0600. `KeyringFile` is what the broker holds: it reloads the file off the event loop
when its modification time or size changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqim.broker._exceptions import InvalidToken, KeyringError

log = logging.getLogger("mqim.broker.tokens")

ALGORITHM = "HS256"
"""The only signing algorithm issued and accepted."""

MAX_TOKEN_CHARS = 4096
"""Longer tokens are refused before any decoding."""

MAX_KEYS = 16
"""The most keys a keyring holds; rotation drops the oldest beyond it."""

MIN_SECRET_BYTES = 32
"""Shortest accepted HMAC key (RFC 7518 section 3.2: at least the hash output size)."""

MAX_KID_CHARS = 64
"""Longest key id."""

DEFAULT_LEEWAY_S = 60
"""Clock skew allowed between the issuer and the broker, seconds."""

MAX_TTL_S = 366 * 24 * 3600
"""Longest lifetime `issue_token` accepts, seconds."""

_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_HEADER_FIELDS = frozenset({"alg", "typ", "kid"})


# -- base64url and strict JSON ----------------------------------------------------------------
def b64url_encode(data: bytes) -> str:
    """Encode without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly.

    Raises:
        InvalidToken: ("malformed") on padding, characters outside the alphabet, an impossible
            length, or non-zero unused trailing bits (a second spelling of the same bytes).
    """
    if not text or any(ch not in _B64_ALPHABET for ch in text) or len(text) % 4 == 1:
        raise InvalidToken("malformed", "not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed", "not unpadded base64url") from exc
    if b64url_encode(data) != text:
        raise InvalidToken("malformed", "non-canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Two parsers could disagree on which one counts: refuse instead of choosing.
            raise InvalidToken("malformed", f"duplicate JSON member {key!r}")
        result[key] = value
    return result


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, InvalidToken):
            raise
        raise InvalidToken("malformed", f"{what} is not a JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed", f"{what} is not a JSON object")
    return value


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=False, ensure_ascii=True).encode("ascii")


# -- keys -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenKey:
    """One signing key.

    Attributes:
        kid: The key id written into tokens' headers.
        secret: The HMAC key (at least `MIN_SECRET_BYTES`); never printed.
        created: When it was made, seconds since the epoch.
    """

    kid: str
    secret: bytes = field(repr=False)
    created: int

    def __post_init__(self) -> None:
        if (
            not self.kid
            or len(self.kid) > MAX_KID_CHARS
            or not self.kid.isascii()
            or not self.kid.isprintable()
        ):
            raise KeyringError(f"invalid key id {self.kid!r}")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise KeyringError(f"key {self.kid!r} is shorter than {MIN_SECRET_BYTES} bytes")

    @classmethod
    def generate(cls, *, now: int) -> TokenKey:
        """Return a new random key created at `now`."""
        return cls(kid=f"k{now}-{secrets.token_hex(3)}", secret=secrets.token_bytes(32), created=now)


class Keyring:
    """The accepted keys, oldest first; the last one signs.

    Args:
        keys: The keys, oldest first (at most `MAX_KEYS`, distinct ids).

    Raises:
        KeyringError: On duplicate key ids or too many keys.
    """

    def __init__(self, *, keys: Sequence[TokenKey] = ()) -> None:
        keys = tuple(keys)
        if len(keys) > MAX_KEYS:
            raise KeyringError(f"a keyring holds at most {MAX_KEYS} keys, got {len(keys)}")
        by_id = {key.kid: key for key in keys}
        if len(by_id) != len(keys):
            raise KeyringError("duplicate key ids in keyring")
        self.keys = keys
        self._by_id = by_id

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def signing_key(self) -> TokenKey | None:
        """The newest key, which signs new tokens; None for an empty keyring."""
        return self.keys[-1] if self.keys else None

    def get(self, kid: str) -> TokenKey | None:
        """Return the key named `kid`, or None."""
        return self._by_id.get(kid)

    def rotated(self, *, now: int, keep: int = 3) -> Keyring:
        """Return a keyring with a new signing key, keeping at most `keep` keys in all.

        Raises:
            KeyringError: When `keep` is not within 1..MAX_KEYS.
        """
        if not 1 <= keep <= MAX_KEYS:
            raise KeyringError(f"keep must be within 1..{MAX_KEYS}, got {keep}")
        new = TokenKey.generate(now=now)
        return Keyring(keys=(*self.keys, new)[-keep:])

    def to_json(self) -> str:
        """The key file's content."""
        keys = [{"kid": k.kid, "secret": b64url_encode(k.secret), "created": k.created} for k in self.keys]
        return json.dumps({"version": 1, "keys": keys}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        """Parse a key file's content.

        Raises:
            KeyringError: When it is not a valid key file.
        """
        try:
            data = json.loads(text)
            if (
                not isinstance(data, dict)
                or data.get("version") != 1
                or not isinstance(data.get("keys"), list)
            ):
                raise KeyringError("not an mqim token key file (version 1)")
            keys = []
            for item in data["keys"]:
                if not isinstance(item, dict):
                    raise KeyringError("a key entry is not an object")
                kid, secret, created = item.get("kid"), item.get("secret"), item.get("created")
                if not isinstance(kid, str) or not isinstance(secret, str) or not isinstance(created, int):
                    raise KeyringError("a key entry needs kid (string), secret (string), created (int)")
                keys.append(TokenKey(kid=kid, secret=b64url_decode(secret), created=created))
        except InvalidToken as exc:
            raise KeyringError(f"a key secret is not base64url: {exc}") from exc
        except ValueError as exc:
            raise KeyringError(f"key file is not valid JSON: {exc}") from exc
        return cls(keys=keys)


def load_keyring(path: Path) -> Keyring:
    """Read a key file; a missing file is an empty keyring.

    Raises:
        KeyringError: The file cannot be read or is not a valid key file.
    """
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        return Keyring()
    except OSError as exc:
        raise KeyringError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token key file %s is accessible by group/others (mode %o); use 0600", path, mode & 0o777)
    try:
        return Keyring.from_json(text)
    except KeyringError as exc:
        raise KeyringError(f"{path}: {exc}") from exc


def save_keyring(path: Path, keyring: Keyring) -> None:
    """Write a key file atomically with mode 0600 (a temporary file renamed over it).

    Raises:
        KeyringError: The file cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start: the secret is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(keyring.to_json())
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.replace(tmp, path)
    except OSError as exc:
        raise KeyringError(f"cannot write {path}: {exc.strerror or exc}") from exc


def ensure_keyring(path: Path, *, now: int) -> Keyring:
    """Load the key file, creating it with one new key when it is missing or empty."""
    keyring = load_keyring(path)
    if keyring.signing_key is None:
        keyring = keyring.rotated(now=now, keep=1)
        save_keyring(path, keyring)
    return keyring


class KeyringFile:
    """A key file the broker watches: `refresh()` reloads it (off the event loop) when it changed.

    A file that becomes unreadable or invalid keeps the last good keyring (and logs why), so a
    half-edited file never locks every token holder out.

    Args:
        path: The key file.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = path
        self.keyring = Keyring()
        self._seen: tuple[int, int, int] | None = None

    def _load_if_changed(self) -> Keyring | None:
        try:
            st = self.path.stat()
            # The inode too: `save_keyring` renames a new file over the old one, so a rotation
            # within one mtime tick, with a file of the same size, is still seen.
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = (0, 0, 0)
        except OSError as exc:
            raise KeyringError(f"cannot stat {self.path}: {exc.strerror or exc}") from exc
        if signature == self._seen:
            return None
        keyring = load_keyring(self.path)
        self._seen = signature
        return keyring

    async def refresh(self) -> bool:
        """Reload the file if it changed; return True when the keyring was replaced."""
        try:
            keyring = await asyncio.to_thread(self._load_if_changed)
        except KeyringError as exc:
            log.error("keeping the previous token keys: %s", exc)
            return False
        if keyring is None:
            return False
        self.keyring = keyring
        log.info("token keys loaded from %s: %d key(s)", self.path, len(keyring))
        return True


# -- tokens -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class TokenClaims:
    """The verified content of a token.

    Attributes:
        subject: `sub`, the user id.
        audience: `aud`, as a tuple.
        issued_at: `iat`, seconds since the epoch.
        expires_at: `exp`, seconds since the epoch.
        token_id: `jti`, the id a revocation names.
        not_before: `nbf`, or None.
        kid: The key that signed it.
    """

    subject: str
    audience: tuple[str, ...]
    issued_at: float
    expires_at: float
    token_id: str
    not_before: float | None = None
    kid: str = ""


def issue_token(
    keyring: Keyring,
    *,
    subject: str,
    audience: str,
    ttl_s: int,
    now: int,
    token_id: str | None = None,
) -> str:
    """Sign a token for `subject` valid from `now` for `ttl_s` seconds, with the newest key.

    Raises:
        KeyringError: The keyring is empty.
        ValueError: On an empty subject or audience, or a ttl outside 1..MAX_TTL_S.
    """
    key = keyring.signing_key
    if key is None:
        raise KeyringError("no signing key: the keyring is empty")
    if not subject or not audience:
        raise ValueError("subject and audience must not be empty")
    if not 1 <= ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be within 1..{MAX_TTL_S} seconds, got {ttl_s}")
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": key.kid}
    claims = {
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
        "jti": token_id or secrets.token_urlsafe(16),
    }
    signing_input = f"{b64url_encode(_dump(header))}.{b64url_encode(_dump(claims))}"
    signature = hmac.new(key.secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(signature)}"


def looks_like_token(text: str) -> bool:
    """Return True if `text` has the shape of a compact JWS (three base64url parts)."""
    if len(text) > MAX_TOKEN_CHARS or text.count(".") != 2:
        return False
    return all(part and all(ch in _B64_ALPHABET for ch in part) for part in text.split("."))


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("malformed", f"not a string of at most {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed", "a token has three dot-separated parts")
    return parts[0], parts[1], parts[2]


def _optional_number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python; a JSON true is not a time. NaN is not a time either.
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise InvalidToken("bad_claims", f"claim {name!r} must be a number")
    return float(value)


def _number(claims: dict[str, Any], name: str) -> float:
    value = _optional_number(claims, name)
    if value is None:
        raise InvalidToken("bad_claims", f"claim {name!r} is required")
    return value


def _string(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken("bad_claims", f"claim {name!r} must be a non-empty string")
    return value


def verify_token(
    keyring: Keyring,
    token: str,
    *,
    audience: str,
    now: float,
    leeway_s: float = DEFAULT_LEEWAY_S,
) -> TokenClaims:
    """Check a token and return its claims.

    Args:
        keyring: The accepted keys.
        token: The compact JWS.
        audience: The audience this verifier is (`aud` must be it or contain it).
        now: The current time, seconds since the epoch.
        leeway_s: Clock skew allowed on `exp`, `nbf` and `iat`.

    Raises:
        InvalidToken: With `reason` malformed, unsupported_alg, unknown_key, bad_signature,
            bad_claims, expired, not_yet_valid or wrong_audience.
    """
    header_b64, claims_b64, signature_b64 = _split(token)
    header = _json_object(b64url_decode(header_b64), "header")
    alg = header.get("alg")
    if alg != ALGORITHM:
        raise InvalidToken("unsupported_alg", f"algorithm {alg!r} is not accepted (only {ALGORITHM})")
    extra = set(header) - _HEADER_FIELDS
    if extra:
        raise InvalidToken("malformed", f"unsupported header fields {sorted(extra)}")
    if "typ" in header and header["typ"] != "JWT":
        raise InvalidToken("malformed", f"typ {header['typ']!r} is not JWT")
    kid = header.get("kid")
    key = keyring.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidToken("unknown_key", f"key id {kid!r} is not in the keyring")
    signature = b64url_decode(signature_b64)
    expected = hmac.new(key.secret, f"{header_b64}.{claims_b64}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("bad_signature", "the signature does not match")
    # Only now, with the signature checked, are the claims worth reading.
    claims = _json_object(b64url_decode(claims_b64), "claims")
    subject = _string(claims, "sub")
    token_id = _string(claims, "jti")
    raw_aud = claims.get("aud")
    if isinstance(raw_aud, str):
        aud: tuple[str, ...] = (raw_aud,)
    elif isinstance(raw_aud, list) and raw_aud and all(isinstance(a, str) for a in raw_aud):
        aud = tuple(raw_aud)
    else:
        raise InvalidToken("bad_claims", "claim 'aud' must be a string or a non-empty list of strings")
    expires = _number(claims, "exp")
    issued = _number(claims, "iat")
    not_before = _optional_number(claims, "nbf")
    if now >= expires + leeway_s:
        raise InvalidToken("expired", f"expired at {expires:.0f}")
    if issued > now + leeway_s:
        raise InvalidToken("not_yet_valid", f"issued in the future ({issued:.0f})")
    if not_before is not None and not_before > now + leeway_s:
        raise InvalidToken("not_yet_valid", f"not valid before {not_before:.0f}")
    if audience not in aud:
        raise InvalidToken("wrong_audience", f"audience {list(aud)} does not include {audience!r}")
    return TokenClaims(
        subject=subject,
        audience=aud,
        issued_at=issued,
        expires_at=expires,
        token_id=token_id,
        not_before=not_before,
        kid=key.kid,
    )


def unverified_claims(token: str) -> dict[str, Any]:
    """Read a token's claims WITHOUT checking anything (for `mqim token revoke TOKEN`).

    Never use the result to decide access.

    Raises:
        InvalidToken: ("malformed") when the claims cannot be read.
    """
    _, claims_b64, _ = _split(token)
    return _json_object(b64url_decode(claims_b64), "claims")
