"""`mqim user ...`: accounts in the server's storage."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mqim.cli._common import fail, open_storage, run, storage_config
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, JsonLinesOpt, MongoOpt, YesOpt
from mqim.protocol import InvalidId, validate_id
from mqim.storage import AccountKind, AlreadyExists, NotFound, StorageError, UserRecord

MAX_PASSWORD_LENGTH = 1024
"""Longest password accepted (hashing cost grows with it)."""

users_app = typer.Typer(
    name="user",
    # Rich markup would swallow a bracketed `[cluster]`: say "cluster section".
    help="Manage accounts (in <data-dir>/mqim.db, or the cluster's MongoDB with --mongo or the "
    "cluster section of the configuration).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="User id ([A-Za-z0-9_.-]{1,64}).", show_default=False)]
PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password", "-p", help="The password; prompted for (twice) when omitted.", show_default=False
    ),
]


def _check_name(name: str) -> str:
    try:
        return validate_id(name, what="user")
    except InvalidId as exc:
        fail(exc.message, 2)


def _password(given: str | None) -> str:
    password = given
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        fail("password must not be empty", 2)
    if len(password) > MAX_PASSWORD_LENGTH:
        fail(f"password is longer than {MAX_PASSWORD_LENGTH} characters", 2)
    return password


def _translate(exc: StorageError, name: str) -> CliError:
    if isinstance(exc, AlreadyExists):
        return CliError(f"user {name!r} already exists")
    if isinstance(exc, NotFound):
        return CliError(f"user {name!r} not found")
    return CliError(f"storage error: {exc}")


@users_app.command("add")
def add_user(
    name: NameArg,
    password: PasswordOpt = None,
    kind: Annotated[
        AccountKind, typer.Option("--kind", "-k", help="Account kind.", case_sensitive=False)
    ] = AccountKind.USER,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Create an account."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    user_id = _check_name(name)
    secret = _password(password)

    async def go() -> UserRecord:
        async with open_storage(config) as storage:
            try:
                return await storage.add_user(user_id, password=secret, kind=kind)
            except StorageError as exc:
                raise _translate(exc, user_id) from exc

    record = run(go())
    typer.echo(f"added {record.kind.value} {record.user_id!r}")


@users_app.command("add-many")
def add_many(
    prefix: Annotated[str, typer.Argument(help="Id prefix: accounts are PREFIX0 .. PREFIX{count-1}.")],
    count: Annotated[int, typer.Option("--count", "-n", help="How many accounts.", min=1, max=1_000_000)],
    password: PasswordOpt = None,
    start: Annotated[int, typer.Option("--start", help="First number.", min=0)] = 0,
    kind: Annotated[
        AccountKind, typer.Option("--kind", "-k", help="Account kind.", case_sensitive=False)
    ] = AccountKind.USER,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Create many accounts sharing one password (device fleets, load tests); existing ids are skipped."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    ids = [_check_name(f"{prefix}{n}") for n in range(start, start + count)]
    secret = _password(password)

    async def go() -> int:
        async with open_storage(config) as storage:
            created = 0
            for offset in range(0, len(ids), 5000):
                created += await storage.add_users(ids[offset : offset + 5000], password=secret, kind=kind)
            return created

    created = run(go())
    typer.echo(f"added {created} {kind.value} accounts ({len(ids) - created} existed)")


@users_app.command("list")
def list_users(
    as_json: JsonLinesOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """List accounts: id, kind, disabled."""
    config = storage_config(config_path, data_dir, mongo_url, database)

    async def go() -> list[UserRecord]:
        async with open_storage(config) as storage:
            try:
                return await storage.list_users()
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    records = run(go())
    if as_json:
        for r in records:
            typer.echo(json.dumps({"id": r.user_id, "kind": r.kind.value, "disabled": r.disabled}))
        return
    rows = [("ID", "KIND", "DISABLED")] + [
        (r.user_id, r.kind.value, "yes" if r.disabled else "no") for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for uid, kind, disabled in rows:
        typer.echo(f"{uid:<{widths[0]}}  {kind:<{widths[1]}}  {disabled}")


@users_app.command("passwd")
def change_password(
    name: NameArg,
    password: PasswordOpt = None,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Set a new password."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    user_id = _check_name(name)

    async def exists() -> bool:
        async with open_storage(config) as storage:
            try:
                return await storage.get_user(user_id) is not None
            except StorageError as exc:
                raise _translate(exc, user_id) from exc

    # Check first so nobody types a password twice for an account that does not exist.
    if not run(exists()):
        fail(f"user {user_id!r} not found")
    secret = _password(password)

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                await storage.set_password(user_id, secret)
            except StorageError as exc:
                raise _translate(exc, user_id) from exc

    run(go())
    typer.echo(f"password of {user_id!r} changed")


def _set_disabled(name: str, disabled: bool, config: MqimConfig) -> None:
    user_id = _check_name(name)

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                await storage.set_disabled(user_id, disabled)
            except StorageError as exc:
                raise _translate(exc, user_id) from exc

    run(go())
    typer.echo(f"{'disabled' if disabled else 'enabled'} {user_id!r}")


@users_app.command("disable")
def disable_user(
    name: NameArg,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Disable an account: it can no longer log in (its data stays)."""
    _set_disabled(name, True, storage_config(config_path, data_dir, mongo_url, database))


@users_app.command("enable")
def enable_user(
    name: NameArg,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Enable a disabled account."""
    _set_disabled(name, False, storage_config(config_path, data_dir, mongo_url, database))


@users_app.command("remove")
def remove_user(
    name: NameArg,
    yes: YesOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Delete an account (its messages stay in their conversations)."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    user_id = _check_name(name)
    if not yes and not typer.confirm(f"Remove user {user_id!r}?", default=False):
        fail("aborted, nothing removed")

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                await storage.remove_user(user_id)
            except StorageError as exc:
                raise _translate(exc, user_id) from exc

    run(go())
    typer.echo(f"removed {user_id!r}")
