"""The "password" authentication method: username + password against the accounts in storage.

scrypt hashes, constant-time compare, disabled accounts refused. Failed logins must cost an
attacker more than the server (issue 12):

- runs at most `AuthOptions.max_concurrent_password_checks` scrypt checks at once (in worker
  threads, through the storage); a CONNECT beyond that waits at most `password_check_wait_s`,
  with at most `max_waiting_password_checks` waiting, else `AuthenticationBusy` is raised and
  the client gets CONNACK 3 (server unavailable). Never an unbounded queue;
- backs off after repeated failures per address, per (account, address) and per account
  (`LoginBackoff`, see `mqim.auth._backoff` for why an attacker cannot lock a real user out
  of a correct login from another address). While a key backs off, an attempt costs a table
  look-up and is refused at once (CONNACK 4), without hashing;
- logs the first failure per source address and reason, then a periodic summary
  (`SummaryLog`), never one line per failure. Exact numbers are in `StorageAuthenticator.stats`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mqim._util import SummaryLog, address_key, host_of
from mqim.acl import Identity
from mqim.auth._accounts import identity_kind
from mqim.auth._authenticator import ConnectRequest
from mqim.auth._backoff import BackoffPolicy, LoginBackoff
from mqim.auth._exceptions import AuthenticationBusy
from mqim.protocol import is_valid_id
from mqim.storage import Storage

log = logging.getLogger("mqim.broker.auth")

DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS = 2
"""scrypt checks at once: each takes a core for ~30 ms; the default suits a 2-core machine."""
DEFAULT_PASSWORD_CHECK_WAIT_S = 15.0
"""How long a CONNECT waits for a free check slot before CONNACK 3. A restart's reconnect storm
of fresh credentials queues here (2 slots of ~30 ms: ~60 logins a second); attackers do not,
their failures back off to table look-ups."""
DEFAULT_MAX_WAITING_PASSWORD_CHECKS = 5_000
"""CONNECTs waiting for a check slot at once; one more gets CONNACK 3 at once. Each waiting one
costs a suspended coroutine, and every one also holds a connection slot (`max_connections`)."""


@dataclass(slots=True)
class PasswordCheckStats:
    """What the "password" method did, exactly (the log only summarises).

    Attributes:
        checks: Password checks run (each a scrypt unless recently verified).
        failures: Checks that failed.
        backoff_refusals: Attempts refused by back-off without a check.
        busy_refusals: Attempts refused because no check slot came free in time.
        peak_concurrent: The most checks that ever ran at once.
    """

    checks: int = 0
    failures: int = 0
    backoff_refusals: int = 0
    busy_refusals: int = 0
    peak_concurrent: int = 0


class PasswordCheckGate:
    """Bounds how many password checks run at once, and how many wait (and how long).

    Args:
        max_concurrent: Checks at once (at least 1).
        max_wait_s: Longest wait for a slot; 0 refuses at once when all slots are taken.
        max_waiting: Most waiters at once.
        stats: Where `peak_concurrent` and `busy_refusals` are counted.
    """

    def __init__(
        self, *, max_concurrent: int, max_wait_s: float, max_waiting: int, stats: PasswordCheckStats
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = max_concurrent
        self.max_wait_s = max(max_wait_s, 0.0)
        self.max_waiting = max(max_waiting, 0)
        self.active = 0
        self.waiting = 0
        self._stats = stats
        self._slots = asyncio.Semaphore(max_concurrent)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a check slot for the body.

        Raises:
            AuthenticationBusy: No slot within `max_wait_s`, or too many waiting already.
        """
        if self._slots.locked():
            if self.waiting >= self.max_waiting or self.max_wait_s <= 0:
                self._stats.busy_refusals += 1
                raise AuthenticationBusy("too many password checks waiting")
            self.waiting += 1
            try:
                async with asyncio.timeout(self.max_wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                self._stats.busy_refusals += 1
                raise AuthenticationBusy(f"no password check slot within {self.max_wait_s:g}s") from None
            finally:
                self.waiting -= 1
        else:
            await self._slots.acquire()  # free: returns without suspending
        self.active += 1
        self._stats.peak_concurrent = max(self._stats.peak_concurrent, self.active)
        try:
            yield
        finally:
            self.active -= 1
            self._slots.release()


class StorageAuthenticator:
    """Username/password against the accounts in storage (scrypt hashes, constant-time compare).

    Checks are bounded (`PasswordCheckGate`) and repeated failures back off (`LoginBackoff`):
    see the module docstring.

    Args:
        storage: Where accounts live.
        allow_anonymous: Accept CONNECTs without a username as an anonymous identity (which the
            built-in ACL grants nothing).
        max_concurrent_checks: Password checks at once.
        check_wait_s: Longest wait for a check slot.
        max_waiting_checks: Most CONNECTs waiting for a slot.
        backoff: The back-off limits.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        *,
        storage: Storage,
        allow_anonymous: bool = False,
        max_concurrent_checks: int = DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS,
        check_wait_s: float = DEFAULT_PASSWORD_CHECK_WAIT_S,
        max_waiting_checks: int = DEFAULT_MAX_WAITING_PASSWORD_CHECKS,
        backoff: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._allow_anonymous = allow_anonymous
        self._clock = clock
        self.stats = PasswordCheckStats()
        self.gate = PasswordCheckGate(
            max_concurrent=max_concurrent_checks,
            max_wait_s=check_wait_s,
            max_waiting=max_waiting_checks,
            stats=self.stats,
        )
        self.backoff = LoginBackoff(policy=backoff or BackoffPolicy())
        self._log = SummaryLog(logger=log, what="failed password login")

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if request.username is None:
            if self._allow_anonymous:
                return Identity(user="", client_id=request.client_id, kind="user")
            return None
        user = request.username
        host = host_of(request.remote_address)
        address = address_key(host)
        stats = self.stats
        if not is_valid_id(user):
            # No such account can log in (the broker refuses invalid ids): nothing to hash, and
            # an unbounded name must not become a key of the back-off table.
            stats.failures += 1
            self.backoff.failed(account="", address=address, now=self._clock())
            self._log.note(host, "invalid user name", "login with an invalid user name from %s", host)
            return None
        scope = self.backoff.blocked(account=user, address=address, now=self._clock())
        if scope is not None:
            stats.backoff_refusals += 1
            self._log.note(
                host,
                f"backing off ({scope})",
                "login of %r from %s refused: backing off (%s)",
                user,
                host,
                scope,
            )
            return None
        try:
            async with self.gate.slot():
                stats.checks += 1
                password = (request.password or b"").decode("utf-8", errors="replace")
                record = await self._storage.verify_password(user, password)
        except AuthenticationBusy:
            self._log.note(host, "busy", "login of %r from %s refused: password checks busy", user, host)
            raise
        if record is None:
            stats.failures += 1
            self.backoff.failed(account=user, address=address, now=self._clock())
            self._log.note(host, "bad credentials", "authentication failed for user %r from %s", user, host)
            return None
        self.backoff.succeeded(account=user, address=address)
        return Identity(user=record.user_id, client_id=request.client_id, kind=identity_kind(record))


PasswordAuthenticator = StorageAuthenticator
"""The "password" method."""
