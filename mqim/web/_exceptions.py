"""Errors of the web client's HTTP listener."""

from __future__ import annotations


class WebError(Exception):
    """An HTTP listener (web client, admin) cannot start (for example, its port is taken)."""
