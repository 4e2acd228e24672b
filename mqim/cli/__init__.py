"""The `mqim` command line (typer) and its configuration model."""

from mqim.cli._app import app, main
from mqim.cli._broker_url import BrokerUrl, parse_broker_url
from mqim.cli._config import MqimConfig, load_config
from mqim.cli._exceptions import CliError, ConfigError
from mqim.cli._logging import configure_logging
from mqim.cli._sections import (
    AuthConfig,
    ClusterConfig,
    LimitsConfig,
    LogConfig,
    LogicConfig,
    ServerConfig,
    TlsConfig,
)

__all__ = [
    "AuthConfig",
    "BrokerUrl",
    "CliError",
    "ClusterConfig",
    "ConfigError",
    "LimitsConfig",
    "LogConfig",
    "LogicConfig",
    "MqimConfig",
    "ServerConfig",
    "TlsConfig",
    "app",
    "configure_logging",
    "load_config",
    "main",
    "parse_broker_url",
]
