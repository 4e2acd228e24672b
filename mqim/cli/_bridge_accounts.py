"""`mqim bridge account ...`: the accounts inbound bridges log in with (kind bridge), in storage."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mqim.cli._bridge_edit import NameArg, checked_name
from mqim.cli._common import fail, open_storage, run, storage_config
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, JsonOpt, MongoOpt, YesOpt
from mqim.storage import AccountKind, AlreadyExists, NotFound, StorageError, UserRecord

MAX_PASSWORD_LENGTH = 1024
"""Longest password accepted."""

account_app = typer.Typer(
    name="account", help="Accounts inbound bridges log in with (kind bridge).", no_args_is_help=True
)


@account_app.command("add")
def add_account(
    name: NameArg,
    password: Annotated[
        str | None,
        typer.Option(
            "--password", "-p", help="Password; prompted for (twice) when omitted.", show_default=False
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Create the account an inbound bridge logs in with; it may use `bridge/NAME/#` only."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    account = checked_name(name, "bridge account")
    secret = password
    if secret is None:
        secret = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not secret or len(secret) > MAX_PASSWORD_LENGTH:
        fail(f"password must have 1 to {MAX_PASSWORD_LENGTH} characters", 2)

    async def go() -> UserRecord:
        async with open_storage(config) as storage:
            try:
                return await storage.add_user(account, password=secret, kind=AccountKind.BRIDGE)
            except AlreadyExists as exc:
                raise CliError(f"account {account!r} already exists") from exc
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    record = run(go())
    typer.echo(f"added bridge account {record.user_id!r}; its namespace is bridge/{record.user_id}/#")


@account_app.command("list")
def list_accounts(
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """List bridge accounts."""
    config = storage_config(config_path, data_dir, mongo_url, database)

    async def go() -> list[UserRecord]:
        async with open_storage(config) as storage:
            try:
                return [r for r in await storage.list_users() if r.kind == AccountKind.BRIDGE]
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    for record in run(go()):
        if as_json:
            typer.echo(json.dumps({"id": record.user_id, "disabled": record.disabled}))
        else:
            typer.echo(f"{record.user_id}{'  (disabled)' if record.disabled else ''}")


@account_app.command("remove")
def remove_account(
    name: NameArg,
    yes: YesOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Delete a bridge account."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    account = checked_name(name, "bridge account")
    if not yes and not typer.confirm(f"Remove bridge account {account!r}?", default=False):
        fail("aborted, nothing removed")

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                record = await storage.get_user(account)
                if record is None or record.kind != AccountKind.BRIDGE:
                    raise CliError(f"bridge account {account!r} not found")
                await storage.remove_user(account)
            except NotFound as exc:
                raise CliError(f"bridge account {account!r} not found") from exc
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    run(go())
    typer.echo(f"removed bridge account {account!r}")
