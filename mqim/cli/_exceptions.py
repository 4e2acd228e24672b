"""Errors of the command line. Each carries the exit code the process ends with.

Hierarchy::

    CliError                  a command failed; one line on stderr, exit code 1
    └── ConfigError           the configuration (file, env, flags) is invalid; exit code 2
"""

from __future__ import annotations


class CliError(Exception):
    """A command failed for a reason the user can act on.

    Args:
        message: One line, shown on stderr.
        exit_code: The process exit code.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(CliError):
    """Invalid configuration; the message names the key and where its value came from."""

    exit_code = 2
