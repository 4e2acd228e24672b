"""Shared options and helpers of the commands: config loading, errors, storage, connections."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from mqim.cli._config import MqimConfig, load_config
from mqim.cli._exceptions import CliError, ConfigError

if TYPE_CHECKING:
    from mqim.storage import Storage

_T = TypeVar("_T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="MQIM_CONFIG",
        help="TOML configuration file (env MQIM_CONFIG). Values: defaults < file < env MQIM_* < flags.",
        dir_okay=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory holding mqim.db  [default: ./mqim-data or config]"),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="Broker host  [default: 127.0.0.1 or config]")]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="Broker port  [default: 1883 or config]", min=0, max=65535)
]


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


@asynccontextmanager
async def open_storage(config: MqimConfig) -> AsyncIterator[Storage]:
    """Open the server's SQLite storage (`<data_dir>/mqim.db`), creating the directory if needed.

    Raises:
        CliError: The directory cannot be created or the database cannot be opened.
    """
    # Imported here so that `mqim --help` does not pay for the storage stack.
    from mqim.storage import SqliteStorage, StorageError

    data_dir = config.server.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create data directory {data_dir}: {exc.strerror or exc}") from exc
    storage = SqliteStorage(path=config.db_path)
    try:
        await storage.open()
    except StorageError as exc:
        raise CliError(f"cannot open storage {config.db_path}: {exc}") from exc
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
