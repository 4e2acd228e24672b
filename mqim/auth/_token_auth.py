"""The "token" authentication method: username = the user id, password = a signed token.

The token (HMAC-SHA256 JWT, see `_tokens`) must name that user as `sub` and this broker's
audience, and be neither expired nor revoked, for an enabled account.

A token signed by a key the broker has not loaded yet (unknown `kid`) makes the "token" method
re-read the key file at once, at most once per `UNKNOWN_KID_RELOAD_INTERVAL_S`, so a token from
`mqim token issue` after `mqim token rotate` works the moment it is issued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mqim._util import SummaryLog, host_of
from mqim.acl import Identity
from mqim.auth._accounts import identity_kind
from mqim.auth._authenticator import ConnectRequest
from mqim.auth._exceptions import InvalidToken
from mqim.auth._keyring import KeyringFile
from mqim.auth._tokens import DEFAULT_LEEWAY_S, TokenClaims, looks_like_token, verify_token
from mqim.storage import Storage

log = logging.getLogger("mqim.broker.auth")

UNKNOWN_KID_RELOAD_INTERVAL_S = 1.0
"""At most one key-file re-read per this many seconds because of an unknown token `kid`."""


class TokenAuthenticator:
    """The "token" method: username = user id, password = a signed token for that user.

    Refused (None, the next method is tried): a password that is not token-shaped, a token that
    fails `verify_token` (bad signature, `alg` other than HS256, unknown `kid`, expired, wrong
    audience...), a `sub` other than the username, a revoked `jti`, an unknown or disabled
    account.

    Args:
        storage: Accounts and revoked token ids.
        keys: The key file (reloaded by `refresh`).
        audience: This broker's audience; a token's `aud` must name it.
        leeway_s: Clock skew allowed on `exp`, `nbf`, `iat`.
        clock: Seconds since the epoch (tests pass their own).
        monotonic: Monotonic seconds, for the unknown-`kid` re-read interval.
    """

    def __init__(
        self,
        *,
        storage: Storage,
        keys: KeyringFile,
        audience: str,
        leeway_s: float = DEFAULT_LEEWAY_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self.keys = keys
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock
        self._monotonic = monotonic
        self._reload_lock = asyncio.Lock()
        self._last_kid_reload: float | None = None
        self.kid_reloads = 0
        """Key-file re-reads caused by an unknown `kid` (at most one per interval)."""
        self._log = SummaryLog(logger=log, what="refused token")

    async def refresh(self) -> None:
        """Reload the key file if it changed."""
        await self.keys.refresh()

    async def _reload_for_unknown_kid(self) -> None:
        # One re-read at a time, at most one per interval: a flood of tokens naming made-up keys
        # costs a stat() a second. Waiters behind the lock then retry with the fresh keys.
        async with self._reload_lock:
            now = self._monotonic()
            last = self._last_kid_reload
            if last is not None and now - last < UNKNOWN_KID_RELOAD_INTERVAL_S:
                return
            self._last_kid_reload = now
            self.kid_reloads += 1
            await self.keys.refresh()

    def _verify(self, token: str) -> TokenClaims:
        return verify_token(
            self.keys.keyring, token, audience=self._audience, now=self._clock(), leeway_s=self._leeway_s
        )

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if request.username is None or not request.password:
            return None
        try:
            token = request.password.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not looks_like_token(token):
            return None
        host = host_of(request.remote_address)
        try:
            try:
                claims = self._verify(token)
            except InvalidToken as exc:
                if exc.reason != "unknown_key":
                    raise
                # Signed by a key issued since the last poll (`mqim token rotate`)? Look now.
                await self._reload_for_unknown_kid()
                claims = self._verify(token)
        except InvalidToken as exc:
            self._log.note(
                host, exc.reason, "token refused for user %r from %s: %s", request.username, host, exc
            )
            return None
        if claims.subject != request.username:
            self._log.note(
                host,
                "subject",
                "token for %r presented as user %r from %s",
                claims.subject,
                request.username,
                host,
            )
            return None
        if await self._storage.is_token_revoked(claims.token_id):
            self._log.note(host, "revoked", "revoked token %s of %r refused", claims.token_id, claims.subject)
            return None
        record = await self._storage.get_user(claims.subject)
        if record is None or record.disabled:
            self._log.note(host, "account", "token of unknown or disabled user %r refused", claims.subject)
            return None
        return Identity(user=record.user_id, client_id=request.client_id, kind=identity_kind(record))
