"""Where each configuration value came from, so that an invalid one is reported with its origin."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from mqim.cli._exceptions import ConfigError

Leaf = tuple[tuple[str, ...], Any, str]
"""A value given by a source: its key path, the raw value, and where it came from
(`file mqim.toml`, `env MQIM_SERVER__PORT`, `command line`)."""


class Origins:
    """The leaves of every source, the later (higher-priority) source winning on a shared key.

    Args:
        leaves: Every source's leaves, lowest priority first (file, environment, flags).

    Raises:
        ConfigError: A key is a value in one place and a table in another (`server = 5` in the
            file and `MQIM_SERVER__PORT` in the environment).
    """

    def __init__(self, leaves: Iterable[Leaf]) -> None:
        self._flat: dict[tuple[str, ...], tuple[Any, str]] = {}
        for path, value, where in leaves:
            self._flat[path] = (value, where)
        self._check_tables()

    def explain(self, exc: ValidationError) -> str:
        """One line naming every invalid key, its value and where it came from."""
        problems = []
        for err in exc.errors():
            loc = tuple(str(part) for part in err["loc"])
            key = ".".join(loc) or "config"
            if err["type"] == "extra_forbidden":
                message = "unknown key"
            else:
                message = str(err["msg"]).removeprefix("Value error, ")
            source = self._source_of(loc)
            if source is not None and loc in self._flat:
                problems.append(f"{key} = {self._flat[loc][0]!r} ({source}): {message}")
            elif source is not None:
                problems.append(f"{key} ({source}): {message}")
            else:
                problems.append(f"{key}: {message}")
        return "invalid configuration: " + "; ".join(problems)

    def _check_tables(self) -> None:
        # Laid out as one tree in the order the values were given: the error names the source of
        # the key that met a value where a table was expected.
        tree: dict[str, Any] = {}
        for path, (_, where) in self._flat.items():
            node = tree
            for depth, key in enumerate(path[:-1]):
                child = node.setdefault(key, {})
                if not isinstance(child, dict):
                    raise ConfigError(
                        f"{'.'.join(path[: depth + 1])}: expected a table, got a value (from {where})"
                    )
                node = child
            if isinstance(node.get(path[-1]), dict):
                raise ConfigError(f"{'.'.join(path)}: expected a table, got a value (from {where})")
            node[path[-1]] = None

    def _source_of(self, loc: tuple[str, ...]) -> str | None:
        if loc in self._flat:
            return self._flat[loc][1]
        # A section-level error (a cross-field check): name every source that fed the section.
        sources = sorted({where for path, (_, where) in self._flat.items() if path[: len(loc)] == loc})
        return ", ".join(sources) if sources else None
