"""Authentication: who a CONNECT is. Passwords (scrypt, login back-off), signed tokens, certificates.

`build_authenticator` composes the methods an `AuthOptions` enables into one `Authenticator`,
which the broker asks for every CONNECT (through amqtt's plugin manager, see
`mqim/broker/_plugins.py`). Tokens are HS256 JWTs checked with PyJWT under a strict policy,
signed by the keys of the data directory's keyring (`mqim token ...`).
"""

from mqim.auth._authenticator import Authenticator, ConnectRequest, RefreshableAuthenticator
from mqim.auth._cert_auth import CertificateAuthenticator, CertUserField, certificate_user
from mqim.auth._exceptions import AuthenticationBusy, AuthError, InvalidToken, KeyringError
from mqim.auth._keyring import Keyring, KeyringFile, TokenKey, ensure_keyring, load_keyring, save_keyring
from mqim.auth._methods import (
    DEFAULT_AUTH_METHODS,
    TOKEN_KEYS_FILENAME,
    AuthMethod,
    AuthOptions,
    CompositeAuthenticator,
    build_authenticator,
)
from mqim.auth._password_auth import PasswordAuthenticator, PasswordCheckStats, StorageAuthenticator
from mqim.auth._token_auth import TokenAuthenticator
from mqim.auth._tokens import TokenClaims, issue_token, looks_like_token, unverified_claims, verify_token

__all__ = [
    "DEFAULT_AUTH_METHODS",
    "TOKEN_KEYS_FILENAME",
    "AuthError",
    "AuthMethod",
    "AuthOptions",
    "AuthenticationBusy",
    "Authenticator",
    "CertUserField",
    "CertificateAuthenticator",
    "CompositeAuthenticator",
    "ConnectRequest",
    "InvalidToken",
    "Keyring",
    "KeyringError",
    "KeyringFile",
    "PasswordAuthenticator",
    "PasswordCheckStats",
    "RefreshableAuthenticator",
    "StorageAuthenticator",
    "TokenAuthenticator",
    "TokenClaims",
    "TokenKey",
    "build_authenticator",
    "certificate_user",
    "ensure_keyring",
    "issue_token",
    "load_keyring",
    "looks_like_token",
    "save_keyring",
    "unverified_claims",
    "verify_token",
]
