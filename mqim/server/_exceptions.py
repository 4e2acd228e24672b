"""Errors of the server compositions.

Hierarchy::

    ServerError               a server or worker cannot start or keep running; the message says why

The components' own errors (`BrokerError`, `StorageError`, `ClusterError`, ...) pass through
unchanged where the caller can act on them; `ServerError` is for what only the composition sees.
"""

from __future__ import annotations


class ServerError(Exception):
    """A server or logic worker cannot start or keep running."""
