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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from mqim.acl import Identity, IdentityKind
from mqim.broker._exceptions import InvalidToken
from mqim.broker._tokens import DEFAULT_LEEWAY_S, KeyringFile, looks_like_token, verify_token
from mqim.protocol import is_valid_id
from mqim.storage import AccountKind, Storage, UserRecord

log = logging.getLogger("mqim.broker.auth")

AuthMethod = Literal["password", "token", "cert"]
"""The names of the authentication methods, as configured."""

CertUserField = Literal["cn", "san"]
"""Where a client certificate names its user: the subject's CN or the first DNS subjectAltName."""

DEFAULT_AUTH_METHODS: tuple[AuthMethod, ...] = ("cert", "token", "password")
"""The default order: the cheap, unambiguous checks first, scrypt last."""


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

    Args:
        storage: Where accounts live.
        allow_anonymous: Accept CONNECTs without a username as an anonymous identity (which the
            built-in ACL grants nothing).
    """

    def __init__(self, *, storage: Storage, allow_anonymous: bool = False) -> None:
        self._storage = storage
        self._allow_anonymous = allow_anonymous

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if request.username is None:
            if self._allow_anonymous:
                return Identity(user="", client_id=request.client_id, kind="user")
            return None
        password = (request.password or b"").decode("utf-8", errors="replace")
        record = await self._storage.verify_password(request.username, password)
        if record is None:
            log.info("authentication failed for user %r from %s", request.username, request.remote_address)
            return None
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
    """

    def __init__(
        self,
        *,
        storage: Storage,
        keys: KeyringFile,
        audience: str,
        leeway_s: float = DEFAULT_LEEWAY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self.keys = keys
        self._audience = audience
        self._leeway_s = leeway_s
        self._clock = clock

    async def refresh(self) -> None:
        """Reload the key file if it changed."""
        await self.keys.refresh()

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if request.username is None or not request.password:
            return None
        try:
            token = request.password.decode("ascii")
        except UnicodeDecodeError:
            return None
        if not looks_like_token(token):
            return None
        try:
            claims = verify_token(
                self.keys.keyring, token, audience=self._audience, now=self._clock(), leeway_s=self._leeway_s
            )
        except InvalidToken as exc:
            log.info("token refused for user %r from %s: %s", request.username, request.remote_address, exc)
            return None
        if claims.subject != request.username:
            log.info(
                "token for %r presented as user %r from %s",
                claims.subject,
                request.username,
                request.remote_address,
            )
            return None
        if await self._storage.is_token_revoked(claims.token_id):
            log.info("revoked token %s of %r refused", claims.token_id, claims.subject)
            return None
        record = await self._storage.get_user(claims.subject)
        if record is None or record.disabled:
            log.info("token of unknown or disabled user %r refused", claims.subject)
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
    """

    methods: tuple[AuthMethod, ...] = DEFAULT_AUTH_METHODS
    token_audience: str = "mqim"
    token_leeway_s: float = DEFAULT_LEEWAY_S
    token_keys_file: Path | None = None
    cert_user_field: CertUserField = "cn"

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
            chain.append(StorageAuthenticator(storage=storage, allow_anonymous=allow_anonymous))
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
