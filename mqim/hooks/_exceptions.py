"""Errors of the hooks package.

Hierarchy::

    HooksError              any failure raised by mqim.hooks
    ├── HookConfigError     an invalid `[hooks]` section or endpoint
    ├── HookHttpError       a POST could not be made or its answer not read (network, TLS,
    │                       timeout, a malformed response); OSError/ssl errors are translated
    └── HookStorageError    the outbox file cannot be opened, read or written (sqlite3 errors
                            are translated to it)
"""

from __future__ import annotations


class HooksError(Exception):
    """Any failure raised by the hooks package."""


class HookConfigError(HooksError):
    """The `[hooks]` configuration (or one endpoint of it) is invalid."""


class HookHttpError(HooksError):
    """An HTTP POST to an endpoint failed before a status line was read (or the answer was bad)."""


class HookStorageError(HooksError):
    """The durable outbox cannot be opened, read or written."""
