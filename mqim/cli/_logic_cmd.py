"""`mqim logic`: the IM logic service as a separate process, an MQTT client of the broker."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from mqim.cli._broker_url import parse_broker_url
from mqim.cli._common import (
    connect_host,
    logic_limits,
    open_storage,
    run,
    run_until_signal,
    storage_config,
    tls_context,
)
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError, ConfigError
from mqim.cli._logging import configure_logging
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, LogFormatOpt, MongoOpt

_log = logging.getLogger("mqim.cli.logic")


@dataclass(frozen=True, slots=True, kw_only=True)
class LogicTarget:
    """Where and as whom a standalone logic service connects."""

    host: str
    port: int
    tls: bool
    username: str
    password: str


def resolve_target(
    config: MqimConfig, *, broker: str | None, username: str | None, password: str | None
) -> LogicTarget:
    """Combine `--broker`/`--username`/`--password` with the `logic` and `server` config sections.

    Precedence per item: the explicit flag, then the URL (flag or `logic.broker_url`), then
    `logic.service_user`/`logic.service_password`; the address defaults to `server.host:port`.

    Raises:
        ConfigError: The URL is invalid or no password is known.
    """
    url = broker if broker is not None else config.logic.broker_url
    if url is not None:
        try:
            parsed = parse_broker_url(url)
        except ValueError as exc:
            raise ConfigError(f"--broker: {exc}") from exc
        host, port, tls = parsed.host, parsed.port, parsed.tls
        url_user, url_password = parsed.username, parsed.password
    else:
        host, port, tls = connect_host(config, None), config.server.port, False
        url_user = url_password = None
    user = username or url_user or config.logic.service_user
    secret = password
    if secret is None:
        secret = url_password
    if secret is None and config.logic.service_password is not None:
        secret = config.logic.service_password.get_secret_value()
    if secret is None:
        raise ConfigError(
            f"no password for the logic service user {user!r}: give --password, put it in the "
            "--broker URL, or set logic.service_password"
        )
    return LogicTarget(host=host, port=port, tls=tls, username=user, password=secret)


def logic_command(
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="Broker URL mqtt://[user:pass@]host[:port] (or mqtts://)  [default: logic.broker_url, "
            "else the server's host and port]",
            show_default=False,
        ),
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(
            "--username", "-u", help="Service account  [default: logic.service_user]", show_default=False
        ),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            "-p",
            envvar="MQIM_LOGIC_PASSWORD",
            help="Service account password (env MQIM_LOGIC_PASSWORD)  [default: logic.service_password]",
            show_default=False,
        ),
    ] = None,
    client_id: Annotated[
        str, typer.Option("--client-id", help="MQTT client id; unique per logic worker.")
    ] = "mqim-logic",
    cafile: Annotated[
        Path | None,
        typer.Option("--cafile", help="CA bundle to verify an mqtts:// broker with.", dir_okay=False),
    ] = None,
    shared: Annotated[
        bool,
        typer.Option("--shared", help="Subscribe with $share/logic/...: workers split the requests."),
    ] = False,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    log_format: LogFormatOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Run the logic service as its own process, connected to the broker over MQTT.

    It validates, stores (in <data-dir>/mqim.db, or the cluster's MongoDB with --mongo or
    cluster.mongo_url) and fans out what users send. Stops cleanly on Ctrl-C or SIGTERM.
    """
    config = storage_config(config_path, data_dir, mongo_url, database, overrides={"log.format": log_format})
    configure_logging(config.log)

    async def go() -> None:
        target = resolve_target(config, broker=broker, username=username, password=password)
        # Imported here so that `mqim --help` does not load the service stack.
        from mqim.server import LogicWorker, ServerError

        async with open_storage(config) as storage:
            worker = LogicWorker(
                storage=storage,
                host=target.host,
                port=target.port,
                username=target.username,
                password=target.password,
                client_id=client_id,
                shared=shared,
                tls_context=tls_context(tls=target.tls, cafile=cafile),
                limits=logic_limits(config),
            )
            try:
                await run_until_signal(worker.run(), name="mqim-logic-service")
            except ServerError as exc:
                raise CliError(str(exc)) from exc
            _log.info("logic service stopped")

    run(go())
