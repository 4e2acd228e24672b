"""Authentication at CONNECT: who is this client? Returns an ACL `Identity` or None.

Methods, each an `Authenticator`:

- `StorageAuthenticator` ("password"): username + password against the accounts in storage
  (scrypt hashes, constant-time compare, disabled accounts refused).
- `TokenAuthenticator` ("token"): username = the user id, password = a signed token
  (HMAC-SHA256 JWT, see `_tokens`) whose `sub` is that user, whose audience is this broker's,
  not expired, not revoked, for an enabled account.
- `CertificateAuthenticator` ("cert"): a TLS client certificate verified against the
  listener's CA; its CN (or first DNS subjectAltName) is the user id. A username, if sent, must
  be the same. Only listeners configured with a CA file pass certificates on.

`CompositeAuthenticator` tries its methods in the configured order; the first that recognises
the client decides. A method answers None when it does not apply or refuses, and the next one
is tried; None from all of them refuses the CONNECT (CONNACK 4).

Failed logins must cost an attacker more than the server (issue 12). The "password" method:

- runs at most `AuthOptions.max_concurrent_password_checks` scrypt checks at once (in worker
  threads, through the storage); a CONNECT beyond that waits at most `password_check_wait_s`,
  with at most `max_waiting_password_checks` waiting, else `AuthenticationBusy` is raised and
  the client gets CONNACK 3 (server unavailable). Never an unbounded queue;
- backs off after repeated failures per address, per (account, address) and per account
  (`LoginBackoff`, see `mqim.broker._backoff` for why an attacker cannot lock a real user out
  of a correct login from another address). While a key backs off, an attempt costs a table
  look-up and is refused at once (CONNACK 4), without hashing;
- logs the first failure per source address and reason, then a periodic summary
  (`SummaryLog`), never one line per failure. Exact numbers are in `StorageAuthenticator.stats`.

A token signed by a key the broker has not loaded yet (unknown `kid`) makes the "token" method
re-read the key file at once, at most once per `UNKNOWN_KID_RELOAD_INTERVAL_S`, so a token from
`mqim token issue` after `mqim token rotate` works the moment it is issued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from mqim.acl import Identity, IdentityKind
from mqim.broker._backoff import BackoffPolicy, LoginBackoff
from mqim.broker._exceptions import AuthenticationBusy, InvalidToken
from mqim.broker._limits import address_key
from mqim.broker._logsummary import SummaryLog, host_of
from mqim.broker._tokens import DEFAULT_LEEWAY_S, KeyringFile, TokenClaims, looks_like_token, verify_token
from mqim.protocol import is_valid_id
from mqim.storage import AccountKind, Storage, UserRecord

log = logging.getLogger("mqim.broker.auth")

_M = TypeVar("_M")

AuthMethod = Literal["password", "token", "cert"]
"""The names of the authentication methods, as configured."""

CertUserField = Literal["cn", "san"]
"""Where a client certificate names its user: the subject's CN or the first DNS subjectAltName."""

DEFAULT_AUTH_METHODS: tuple[AuthMethod, ...] = ("cert", "token", "password")
"""The default order: the cheap, unambiguous checks first, scrypt last."""

DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS = 2
"""scrypt checks at once: each takes a core for ~30 ms; the default suits a 2-core machine."""
DEFAULT_PASSWORD_CHECK_WAIT_S = 15.0
"""How long a CONNECT waits for a free check slot before CONNACK 3. A restart's reconnect storm
of fresh credentials queues here (2 slots of ~30 ms: ~60 logins a second); attackers do not,
their failures back off to table look-ups."""
DEFAULT_MAX_WAITING_PASSWORD_CHECKS = 5_000
"""CONNECTs waiting for a check slot at once; one more gets CONNACK 3 at once. Each waiting one
costs a suspended coroutine, and every one also holds a connection slot (`max_connections`)."""
UNKNOWN_KID_RELOAD_INTERVAL_S = 1.0
"""At most one key-file re-read per this many seconds because of an unknown token `kid`."""


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


def identity_kind(record: UserRecord) -> IdentityKind:
    """The ACL identity kind of an account."""
    if record.kind == AccountKind.SERVICE:
        return "service"
    if record.kind == AccountKind.BRIDGE:
        return "bridge"
    return "user"


@dataclass(slots=True, kw_only=True)
class ConnectRequest:
    """What a client presented at CONNECT.

    The attribute names (`username`, `password`, `client_id`, `remote_address`) match amqtt's
    `Session`, so amqtt authentication plugins can read this object; a plugin that knows mqim
    sets `identity`.
    """

    username: str | None
    password: bytes | None
    client_id: str
    listener: str
    remote_address: str
    peer_cert: dict[str, Any] | None = None
    bridge: bool = False
    identity: Identity | None = None


class Authenticator(Protocol):
    """Decides who a client is."""

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        """Return the identity, or None to refuse the connection."""
        ...


@runtime_checkable
class RefreshableAuthenticator(Authenticator, Protocol):
    """An authenticator with state to reload from outside (token keys); the broker polls it."""

    async def refresh(self) -> None:
        """Reload what may have changed."""
        ...


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


def certificate_user(peer_cert: dict[str, Any], field: CertUserField) -> str | None:
    """The user a verified certificate (as `ssl.SSLSocket.getpeercert()` returns it) names.

    Returns None when the field is absent, appears more than once (ambiguous), or is not a
    valid user id.
    """
    values: list[str] = []
    if field == "cn":
        for rdn in peer_cert.get("subject", ()):
            for attribute in rdn:
                if len(attribute) == 2 and attribute[0] == "commonName":
                    values.append(str(attribute[1]))
    else:
        for kind, value in peer_cert.get("subjectAltName", ()):
            if kind == "DNS":
                values.append(str(value))
                break  # the first DNS name is the user; others name the device
    if len(values) != 1 or not is_valid_id(values[0]):
        return None
    return values[0]


class CertificateAuthenticator:
    """The "cert" method: a verified TLS client certificate names the user.

    Args:
        storage: Accounts (the named account must exist and be enabled).
        field: `cn` (subject common name) or `san` (first DNS subjectAltName).
    """

    def __init__(self, *, storage: Storage, field: CertUserField = "cn") -> None:
        self._storage = storage
        self._field = field

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if not request.peer_cert:
            return None
        user = certificate_user(request.peer_cert, self._field)
        if user is None:
            log.info("client certificate from %s names no valid user", request.remote_address)
            return None
        if request.username is not None and request.username != user:
            return None  # the client asks to be someone else: let another method decide
        record = await self._storage.get_user(user)
        if record is None or record.disabled:
            log.info("certificate of unknown or disabled user %r refused", user)
            return None
        return Identity(user=record.user_id, client_id=request.client_id, kind=identity_kind(record))


class CompositeAuthenticator:
    """Tries authentication methods in order; the first identity wins.

    Args:
        methods: The methods, in the order they are tried.
    """

    def __init__(self, *, methods: Sequence[Authenticator]) -> None:
        self.methods = tuple(methods)

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        for method in self.methods:
            identity = await method.authenticate(request)
            if identity is not None:
                return identity
        return None

    def method(self, kind: type[_M]) -> _M | None:
        """The first method of class `kind` in the chain, if any (for its counters)."""
        return next((m for m in self.methods if isinstance(m, kind)), None)

    async def refresh(self) -> None:
        """Refresh every method that has state to reload."""
        for method in self.methods:
            if isinstance(method, RefreshableAuthenticator):
                await method.refresh()


TOKEN_KEYS_FILENAME = "token-keys.json"
"""The key file's name inside the data directory, unless configured elsewhere."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthOptions:
    """How clients authenticate.

    Attributes:
        methods: The methods, in the order they are tried.
        token_audience: The `aud` a token must name.
        token_leeway_s: Clock skew allowed on token times, seconds.
        token_keys_file: The key file; None means `<data_dir>/token-keys.json`.
        cert_user_field: Where a client certificate names its user (`cn` or `san`).
        max_concurrent_password_checks: scrypt checks at once (at least 1).
        password_check_wait_s: Longest wait of a CONNECT for a check slot; beyond it CONNACK 3.
        max_waiting_password_checks: CONNECTs waiting for a slot at once; one more gets
            CONNACK 3 at once.
        login_backoff: Back-off after failed password logins (`BackoffPolicy`).
    """

    methods: tuple[AuthMethod, ...] = DEFAULT_AUTH_METHODS
    token_audience: str = "mqim"
    token_leeway_s: float = DEFAULT_LEEWAY_S
    token_keys_file: Path | None = None
    cert_user_field: CertUserField = "cn"
    max_concurrent_password_checks: int = DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS
    password_check_wait_s: float = DEFAULT_PASSWORD_CHECK_WAIT_S
    max_waiting_password_checks: int = DEFAULT_MAX_WAITING_PASSWORD_CHECKS
    login_backoff: BackoffPolicy = field(default_factory=BackoffPolicy)

    def keys_path(self, data_dir: Path) -> Path:
        """The key file for a server whose data directory is `data_dir`."""
        return self.token_keys_file if self.token_keys_file is not None else data_dir / TOKEN_KEYS_FILENAME


def build_authenticator(
    *, storage: Storage, options: AuthOptions, data_dir: Path, allow_anonymous: bool = False
) -> CompositeAuthenticator:
    """The configured chain of methods.

    Raises:
        ValueError: On an unknown or repeated method.
    """
    methods = options.methods
    if len(set(methods)) != len(methods):
        raise ValueError(f"authentication methods listed twice: {list(methods)}")
    chain: list[Authenticator] = []
    for name in methods:
        if name == "password":
            chain.append(
                StorageAuthenticator(
                    storage=storage,
                    allow_anonymous=allow_anonymous,
                    max_concurrent_checks=options.max_concurrent_password_checks,
                    check_wait_s=options.password_check_wait_s,
                    max_waiting_checks=options.max_waiting_password_checks,
                    backoff=options.login_backoff,
                )
            )
        elif name == "token":
            keys = KeyringFile(path=options.keys_path(data_dir))
            chain.append(
                TokenAuthenticator(
                    storage=storage,
                    keys=keys,
                    audience=options.token_audience,
                    leeway_s=options.token_leeway_s,
                )
            )
        elif name == "cert":
            chain.append(CertificateAuthenticator(storage=storage, field=options.cert_user_field))
        else:
            raise ValueError(f"unknown authentication method {name!r}")
    return CompositeAuthenticator(methods=chain)
