"""ACL errors. The decision path never raises: a request it cannot judge is denied.

Errors come only from building things: a rule, a rule text, an identity.

Hierarchy::

    AclError                  any ACL error
    ├── InvalidRule           a rule that cannot be built (also a ValueError)
    │   └── RuleSyntaxError   rule text that does not parse; carries the line number if known
    └── InvalidIdentity       an identity with an unknown kind or bad fields (also a ValueError)
"""

from __future__ import annotations


class AclError(Exception):
    """Any ACL error."""


class InvalidRule(AclError, ValueError):
    """A rule that cannot be built: bad pattern, bad placeholder, bad subject or actions.

    It is a `ValueError` too, so configuration validators (pydantic) report it as bad input.
    """


class RuleSyntaxError(InvalidRule):
    """Rule text that does not parse.

    Args:
        message: What is wrong, for a human.
        line: The 1-based line number in a multi-line rule text, or None for a single rule.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.message = message
        self.line = line


class InvalidIdentity(AclError, ValueError):
    """An identity with an unknown kind or fields of the wrong type."""
