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

The methods live in their own modules (`_password_auth`, `_token_auth`, `_cert_auth`) behind
the `Authenticator` contract (`_authenticator`); this module names them, orders them and builds
the chain from `AuthOptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from mqim.acl import Identity
from mqim.auth._authenticator import Authenticator, ConnectRequest, RefreshableAuthenticator
from mqim.auth._backoff import BackoffPolicy
from mqim.auth._cert_auth import CertificateAuthenticator, CertUserField
from mqim.auth._keyring import KeyringFile
from mqim.auth._password_auth import (
    DEFAULT_MAX_CONCURRENT_PASSWORD_CHECKS,
    DEFAULT_MAX_WAITING_PASSWORD_CHECKS,
    DEFAULT_PASSWORD_CHECK_WAIT_S,
    StorageAuthenticator,
)
from mqim.auth._token_auth import TokenAuthenticator
from mqim.auth._tokens import DEFAULT_LEEWAY_S
from mqim.storage import Storage

_M = TypeVar("_M")

AuthMethod = Literal["password", "token", "cert"]
"""The names of the authentication methods, as configured."""

DEFAULT_AUTH_METHODS: tuple[AuthMethod, ...] = ("cert", "token", "password")
"""The default order: the cheap, unambiguous checks first, scrypt last."""


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
