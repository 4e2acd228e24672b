"""Token signing keys: `TokenKey`, the `Keyring` of accepted keys, the key file.

Keys live in a `Keyring`: several keys are accepted at once (each token names its key with
`kid`), the newest signs. Rotation adds a new key and keeps the newest `keep` ones, so tokens
signed by a recently retired key stay valid until they expire or the key is dropped.

The key file (`token-keys.json` in the data directory by default) is JSON, written atomically
with mode 0600. `KeyringFile` is what the broker holds: it reloads the file off the event loop
when its modification time or size changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mqim.auth._b64url import b64url_decode, b64url_encode
from mqim.auth._exceptions import InvalidToken, KeyringError

log = logging.getLogger("mqim.broker.tokens")

MAX_KEYS = 16
"""The most keys a keyring holds; rotation drops the oldest beyond it."""

MIN_SECRET_BYTES = 32
"""Shortest accepted HMAC key (RFC 7518 section 3.2: at least the hash output size)."""

MAX_KID_CHARS = 64
"""Longest key id."""


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
