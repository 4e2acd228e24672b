"""Errors of the admin endpoints."""

from __future__ import annotations


class AdminError(Exception):
    """The admin listener cannot start, or a running server's admin endpoint cannot be read."""
