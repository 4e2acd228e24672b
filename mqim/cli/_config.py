"""The configuration model and its loader: defaults < TOML file < environment < command-line flags.

Environment variables are `MQIM_<SECTION>__<KEY>` (nested tables add more `__<KEY>` levels), e.g.
`MQIM_SERVER__PORT=1884` or `MQIM_SERVER__TLS__CERTFILE=/etc/mqim/cert.pem`; an empty value
means "not set" (None). Relative paths are relative to the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mqim.cli._broker_url import BrokerUrl, parse_broker_url
from mqim.cli._exceptions import ConfigError
from mqim.cli._origins import Origins
from mqim.cli._sections import (
    AdminConfig,
    AuthConfig,
    AuthMethodName,
    ClusterConfig,
    LimitsConfig,
    LogConfig,
    LogicConfig,
    Port,
    ServerConfig,
    SysConfig,
    TlsConfig,
    WebConfig,
)
from mqim.cli._sources import EnvSource, FlagSource, TomlSource
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


class MqimConfig(BaseSettings):
    """The whole configuration. Build it with `load_config`; built directly (`MqimConfig()`,
    `MqimConfig(server=...)`) it reads nothing but its arguments."""

    # Unknown keys are errors: a typo must not silently fall back to a default; keys are
    # case-sensitive (the environment's names are not: `mqim/cli/_sources.py`). The environment
    # is read without JSON decoding: `MQIM_AUTH__METHODS=cert,token` is split by its section.
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        case_sensitive=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_SEPARATOR,
        enable_decoding=False,
    )

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the constructor's arguments: `load_config` passes the file, the environment it
        is given and the flags as sources of their own."""
        return (init_settings,)

    @property
    def db_path(self) -> Path:
        """The SQLite storage file: `<server.data_dir>/mqim.db`."""
        return self.server.data_dir / DB_FILENAME


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
    file = None if path is None else TomlSource(MqimConfig, path=path)
    env = EnvSource(MqimConfig, environ=os.environ if environ is None else environ)
    flags = FlagSource(MqimConfig, overrides=overrides or {})
    origins = Origins([*(file.leaves() if file is not None else []), *env.leaves(), *flags.leaves()])
    # Highest priority first, as pydantic-settings merges them.
    sources: tuple[PydanticBaseSettingsSource, ...] = (flags, env) if file is None else (flags, env, file)
    try:
        # `_build_sources` is BaseSettings' own argument; mypy, without pydantic's plugin, knows
        # only the fields as constructor arguments.
        return MqimConfig(_build_sources=(sources, {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(origins.explain(exc)) from exc
