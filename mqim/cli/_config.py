"""The configuration model and its loader: defaults < TOML file < environment < command-line flags.

Environment variables are `MQIM_<SECTION>__<KEY>` (nested tables add more `__<KEY>` levels), e.g.
`MQIM_SERVER__PORT=1884` or `MQIM_SERVER__TLS__CERTFILE=/etc/mqim/cert.pem`; an empty value
means "not set" (None). Relative paths are relative to the working directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mqim.cli._broker_url import BrokerUrl, parse_broker_url
from mqim.cli._exceptions import ConfigError
from mqim.cli._sections import (
    AdminConfig,
    AuthConfig,
    AuthMethodName,
    ClusterConfig,
    LimitsConfig,
    LogConfig,
    LogicConfig,
    Port,
    Section,
    ServerConfig,
    SysConfig,
    TlsConfig,
    WebConfig,
)
from mqim.hooks import HooksConfig

__all__ = [
    "DB_FILENAME",
    "ENV_PREFIX",
    "ENV_SEPARATOR",
    "AdminConfig",
    "AuthConfig",
    "AuthMethodName",
    "BrokerUrl",
    "ClusterConfig",
    "LimitsConfig",
    "LogConfig",
    "LogicConfig",
    "MqimConfig",
    "Port",
    "ServerConfig",
    "SysConfig",
    "TlsConfig",
    "WebConfig",
    "load_config",
    "parse_broker_url",
]

ENV_PREFIX = "MQIM_"
"""Prefix of configuration environment variables."""

ENV_SEPARATOR = "__"
"""Separator of levels in configuration environment variable names."""

DB_FILENAME = "mqim.db"
"""The SQLite storage file inside `server.data_dir`."""


class MqimConfig(Section):
    """The whole configuration. Build it with `load_config`."""

    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    logic: LogicConfig = LogicConfig()
    auth: AuthConfig = AuthConfig()
    log: LogConfig = LogConfig()
    web: WebConfig = WebConfig()
    admin: AdminConfig = AdminConfig()
    sys: SysConfig = SysConfig()
    cluster: ClusterConfig = ClusterConfig()
    hooks: HooksConfig = HooksConfig()

    @property
    def db_path(self) -> Path:
        """The SQLite storage file: `<server.data_dir>/mqim.db`."""
        return self.server.data_dir / DB_FILENAME


# -- loading ---------------------------------------------------------------------------------------

_Flat = dict[tuple[str, ...], tuple[Any, str]]
"""Leaf values by key path, each with a description of where it came from."""


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> MqimConfig:
    """Build the configuration: defaults < TOML file < environment < `overrides`.

    Args:
        path: A TOML file, or None for no file.
        overrides: Values from command-line flags, by dotted key (`{"server.port": 1884}`);
            None values are ignored, so unset flags can be passed as they are.
        environ: The environment to read `MQIM_*` variables from; default `os.environ`.

    Raises:
        ConfigError: The file is missing or not TOML, or a value is invalid; the message names
            the key (`server.port`) and where the value came from.
    """
    flat: _Flat = {}
    if path is not None:
        _flatten(_read_toml(path), (), f"file {path}", flat)
    flat.update(_from_env(os.environ if environ is None else environ))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            flat[tuple(dotted.split("."))] = (value, "command line")
    tree = _unflatten(flat)
    try:
        return MqimConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, flat)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc


def _flatten(table: Mapping[str, Any], prefix: tuple[str, ...], source: str, out: _Flat) -> None:
    for key, value in table.items():
        path = (*prefix, key)
        if isinstance(value, Mapping):
            _flatten(value, path, source, out)
        else:
            out[path] = (value, source)


def _from_env(environ: Mapping[str, str]) -> _Flat:
    out: _Flat = {}
    for name, value in environ.items():
        # Only names with a level separator are configuration (MQIM_CONFIG, MQIM_PASSWORD are not).
        if not name.startswith(ENV_PREFIX) or ENV_SEPARATOR not in name:
            continue
        levels = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_SEPARATOR))
        if any(not level for level in levels):
            raise ConfigError(f"malformed configuration variable {name}: empty level")
        out[levels] = (value if value != "" else None, f"env {name}")
    return out


def _unflatten(flat: _Flat) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, (value, source) in flat.items():
        node = tree
        for depth, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"{where}: expected a table, got a value (from {source})")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(f"{'.'.join(path)}: expected a table, got a value (from {source})")
        node[path[-1]] = value
    return tree


def _explain(exc: ValidationError, flat: _Flat) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        source = _source_of(loc, flat)
        if source is not None and loc in flat:
            problems.append(f"{key} = {flat[loc][0]!r} ({source}): {message}")
        elif source is not None:
            problems.append(f"{key} ({source}): {message}")
        else:
            problems.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(problems)


def _source_of(loc: tuple[str, ...], flat: _Flat) -> str | None:
    if loc in flat:
        return flat[loc][1]
    # A section-level error (a cross-field check): name every source that fed the section.
    sources = sorted({source for path, (_, source) in flat.items() if path[: len(loc)] == loc})
    return ", ".join(sources) if sources else None
