"""Errors of the web client's HTTP listener."""

from __future__ import annotations


class WebError(Exception):
    """The web client's HTTP listener cannot start (for example, its port is taken)."""
