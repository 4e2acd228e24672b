"""Authentication errors.

Hierarchy::

    AuthError                   any failure of authentication or of its keys
    ├── AuthenticationBusy      no password check slot within the bounded wait (CONNACK 3)
    ├── InvalidToken            a signed token that must be refused (its `reason` says why)
    └── KeyringError            the token key file cannot be read, parsed or written
"""

from __future__ import annotations


class AuthError(Exception):
    """Any failure of authentication or of its signing keys."""


class AuthenticationBusy(AuthError):
    """No password check slot within the bounded wait: the CONNECT gets CONNACK 3."""


class InvalidToken(AuthError):
    """A signed token that must be refused.

    Args:
        reason: A short machine-readable cause (`malformed`, `unsupported_alg`, `unknown_key`,
            `bad_signature`, `expired`, `not_yet_valid`, `wrong_audience`, `bad_claims`).
        message: What is wrong, for logs.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class KeyringError(AuthError):
    """The token key file cannot be read, parsed or written."""
