"""Signed access tokens: HMAC-SHA256 JSON Web Tokens (RFC 7519 in JWS compact form, RFC 7515).

PyJWT (`jwt`) signs them and checks their signatures; this module holds mqim's policy around
it. Only what mqim issues is accepted, and nothing else:

- the header is exactly `{"alg":"HS256","typ":"JWT","kid":...}` in content: `alg` must be
  `HS256` (`none`, RS*/ES* and the rest are refused, so no algorithm confusion is possible),
  `kid` must name a key of the keyring, `typ` if present must be `JWT`, and any other header
  field (`crit`, `jku`, ...) is refused. The header is read here first; PyJWT is then given
  the key `kid` names and HS256 as the only algorithm;
- the signature is checked (constant-time, by PyJWT) before the claims are parsed; the claims
  and signature parts are base64url-checked before it, so a token whose claims part is not
  base64url is `malformed` even when its signature is also wrong;
- claims `sub`, `aud` (a string or a list of strings), `exp`, `iat` and `jti` are required,
  `nbf` is optional; `exp`, `nbf` and `iat` are compared with the caller's `now` allowing
  `leeway_s` seconds of clock skew;
- JSON objects with duplicate names, base64url with padding or non-canonical trailing bits, and
  tokens longer than `MAX_TOKEN_CHARS` are malformed.

PyJWT's own claim checks are off: it compares times with the wall clock (here they are compared
with the caller's `now`), takes `true` for a time and an empty `sub` for a subject. Its errors
become `InvalidToken` where it is called.

The keys (`Keyring`, rotation, the key file) are in `_keyring`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.types import Options

from mqim.auth._b64url import B64_ALPHABET, b64url_decode
from mqim.auth._exceptions import InvalidToken, KeyringError
from mqim.auth._keyring import Keyring

ALGORITHM = "HS256"
"""The only signing algorithm issued and accepted."""

MAX_TOKEN_CHARS = 4096
"""Longer tokens are refused before any decoding."""

DEFAULT_LEEWAY_S = 60
"""Clock skew allowed between the issuer and the broker, seconds."""

MAX_TTL_S = 366 * 24 * 3600
"""Longest lifetime `issue_token` accepts, seconds."""

_HEADER_FIELDS = frozenset({"alg", "typ", "kid"})


# -- strict JSON ------------------------------------------------------------------------------
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
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: nested deeper than the parser goes, within MAX_TOKEN_CHARS.
        raise InvalidToken("malformed", f"{what} is not a JSON object") from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed", f"{what} is not a JSON object")
    return value


class _StrictJWT(jwt.PyJWT):
    """PyJWT reading the claims with `_json_object` (duplicate names refused)."""

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        # PyJWT's documented hook for the claims' JSON; it runs after the signature check.
        return _json_object(decoded["payload"], "claims")


_JWT = _StrictJWT()
_SIGNATURE_ONLY: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}
"""What PyJWT checks: the signature; the claims are checked by `verify_token`."""


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
    claims = {
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + ttl_s,
        "jti": token_id or secrets.token_urlsafe(16),
    }
    # PyJWT writes the header {"alg":"HS256","kid":...,"typ":"JWT"}.
    return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


def looks_like_token(text: str) -> bool:
    """Return True if `text` has the shape of a compact JWS (three base64url parts)."""
    if len(text) > MAX_TOKEN_CHARS or text.count(".") != 2:
        return False
    return all(part and all(ch in B64_ALPHABET for ch in part) for part in text.split("."))


def _split(token: str) -> tuple[str, str, str]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("malformed", f"not a string of at most {MAX_TOKEN_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("malformed", "a token has three dot-separated parts")
    return parts[0], parts[1], parts[2]


def _base64url_shaped(part: str) -> bool:
    # Not empty, no padding, nothing outside the alphabet: PyJWT accepts `=` and empty parts.
    return bool(part) and all(ch in B64_ALPHABET for ch in part)


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
    if not _base64url_shaped(claims_b64) or not _base64url_shaped(signature_b64):
        # PyJWT then refuses impossible lengths and non-canonical trailing bits.
        raise InvalidToken("malformed", "not unpadded base64url")
    try:
        # The claims' JSON is read (`_StrictJWT`) only once the signature is checked.
        claims = _JWT.decode(token, key.secret, algorithms=[ALGORITHM], options=_SIGNATURE_ONLY)
    except jwt.InvalidSignatureError as exc:
        raise InvalidToken("bad_signature", "the signature does not match") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("malformed", str(exc)) from exc
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
