"""Shared helpers of the commands: config loading, errors, storage, connections (their options:
`mqim/cli/_options.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer

from mqim.cli._config import MqimConfig, load_config
from mqim.cli._exceptions import CliError, ConfigError
from mqim.cli._options import REDIS_ENV

if TYPE_CHECKING:
    from mqim.logic import LogicLimits
    from mqim.storage import Storage

_T = TypeVar("_T")


def fail(message: str, exit_code: int = 1) -> NoReturn:
    """Print `error: message` on stderr and end the command with `exit_code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def get_config(config_path: Path | None, overrides: dict[str, Any] | None = None) -> MqimConfig:
    """Load the configuration, ending the command with exit code 2 if it is invalid."""
    try:
        return load_config(config_path, overrides or {})
    except ConfigError as exc:
        fail(exc.message, exc.exit_code)


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a command's coroutine; a `CliError` ends the command with its message and code."""
    try:
        return asyncio.run(coro)
    except CliError as exc:
        fail(exc.message, exc.exit_code)


def storage_config(
    config_path: Path | None,
    data_dir: Path | None,
    mongo_url: str | None,
    database: str | None,
    *,
    overrides: dict[str, Any] | None = None,
) -> MqimConfig:
    """The configuration of a command that opens storage (`open_storage`), flags applied.

    `MQIM_REDIS_URL` counts as `cluster.redis_url` (as for `mqim broker`): with it, or any other
    sign of a cluster, `open_storage` refuses to fall back to the local SQLite.
    """
    return get_config(
        config_path,
        {
            **(overrides or {}),
            "server.data_dir": data_dir,
            "cluster.mongo_url": mongo_url,
            "cluster.database": database,
            "cluster.redis_url": os.environ.get(REDIS_ENV) or None,
        },
    )


def logic_limits(config: MqimConfig) -> LogicLimits:
    """The logic service's limits from `[limits]`: one mapping for `serve`, `broker` and `logic`."""
    from mqim.logic import LogicLimits

    return LogicLimits(
        max_payload_bytes=config.limits.max_payload_bytes,
        max_group_members=config.limits.max_group_members,
    )


def redact_url(url: str) -> str:
    """`url` without its user and password (for messages and logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def cluster_configured(config: MqimConfig) -> str | None:
    """The key that says a cluster is configured without a MongoDB URL, or None."""
    cluster = config.cluster
    if cluster.mongo_url is not None:
        return None
    if cluster.redis_url is not None:
        return "cluster.redis_url"
    if cluster.node_id is not None:
        return "cluster.node_id"
    return None


@asynccontextmanager
async def open_storage(config: MqimConfig) -> AsyncIterator[Storage]:
    """Open the configured storage: the cluster's MongoDB when `cluster.mongo_url` is set, else the
    server's SQLite (`<data_dir>/mqim.db`, its directory created if needed).

    Raises:
        CliError: The storage cannot be opened, or a cluster is configured (Redis URL, node id)
            without a MongoDB URL: an account written to the local SQLite then would be
            invisible to every node, so nothing is written.
    """
    # Imported here so that `mqim --help` does not pay for the storage stack.
    from mqim.storage import MongoStorage, SqliteStorage, StorageError

    cluster = config.cluster
    storage: Storage
    if cluster.mongo_url is not None:
        where = f"MongoDB storage at {redact_url(cluster.mongo_url)} (database {cluster.database})"
        storage = MongoStorage(url=cluster.mongo_url, database=cluster.database)
    else:
        key = cluster_configured(config)
        if key is not None:
            raise CliError(
                f"a cluster is configured ({key}) but no MongoDB URL: give --mongo, set "
                "MQIM_MONGO_URL or cluster.mongo_url (the local SQLite is not used in cluster mode)",
                exit_code=2,
            )
        data_dir = config.server.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create data directory {data_dir}: {exc.strerror or exc}") from exc
        where = f"storage {config.db_path}"
        storage = SqliteStorage(path=config.db_path)
    try:
        await storage.open()
    except StorageError as exc:
        raise CliError(f"cannot open {where}: {exc}") from exc
    try:
        yield storage
    finally:
        await storage.close()


def connect_host(config: MqimConfig, host: str | None) -> str:
    """The host a client should connect to: `--host`, else the server's, with wildcards made local."""
    if host is not None:
        return host
    # A server bound to every interface is reached locally through the loopback address.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.server.host, config.server.host)


def tls_context(*, tls: bool, cafile: Path | None) -> ssl.SSLContext | None:
    """An SSL context verifying the server (against `cafile` if given), or None for plain TCP."""
    if not tls and cafile is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(cafile) if cafile is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot load CA file {cafile}: {exc}", exit_code=2) from exc


async def run_until_signal(main: Coroutine[Any, Any, None], *, name: str) -> None:
    """Run `main` as a task named `name` until it returns or SIGINT/SIGTERM arrives (then cancel it).

    A graceful stop returns normally. An exception raised by `main` propagates as itself, not
    wrapped in an exception group.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Unavailable off the main thread and on some platforms; Ctrl-C then still ends the
        # process through asyncio.run's own handler.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        async with asyncio.TaskGroup() as group:
            task = group.create_task(main, name=name)
            task.add_done_callback(lambda _task: stop.set())
            await stop.wait()
            task.cancel()
    except BaseExceptionGroup as group_error:
        if len(group_error.exceptions) == 1:
            raise group_error.exceptions[0] from None
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
