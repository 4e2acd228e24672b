"""`mqim role ...`: roles that ACL rules name (`role:NAME`), and who holds them.

A running server reads roles again within `auth.reload_interval_s`: a role taken away stops
covering the user's live sessions, and the subscriptions it allowed are removed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from mqim.cli._common import fail, open_storage, run, storage_config
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, JsonLinesOpt, MongoOpt, YesOpt
from mqim.protocol import InvalidId, validate_id
from mqim.storage import AlreadyExists, NotFound, Storage, StorageError

MAX_DESCRIPTION = 1024
"""Longest role description."""

_T = TypeVar("_T")


def _with_storage(config: MqimConfig, action: Callable[[Storage], Awaitable[_T]]) -> _T:
    """Run one storage call on the configured storage, its errors translated for the CLI."""

    async def go() -> _T:
        async with open_storage(config) as storage:
            try:
                return await action(storage)
            except StorageError as exc:
                raise _storage_error(exc) from exc

    return run(go())


role_app = typer.Typer(
    name="role",
    help="Manage roles (in mqim.db or the cluster's MongoDB); ACL rules refer to them as role:NAME.",
    no_args_is_help=True,
)

RoleArg = Annotated[str, typer.Argument(help="Role name ([A-Za-z0-9_.-]{1,64}).", show_default=False)]
UserArg = Annotated[str, typer.Argument(help="User id.", show_default=False)]


def _check(value: str, what: str) -> str:
    try:
        return validate_id(value, what=what)
    except InvalidId as exc:
        fail(exc.message, 2)


def _storage_error(exc: StorageError) -> CliError:
    if isinstance(exc, NotFound | AlreadyExists):
        return CliError(str(exc))
    return CliError(f"storage error: {exc}")


@role_app.command("add")
def add_role(
    name: RoleArg,
    description: Annotated[str, typer.Option("--description", "-d", help="Free text.")] = "",
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Create a role."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    role = _check(name, "role")
    if len(description) > MAX_DESCRIPTION:
        fail(f"description is longer than {MAX_DESCRIPTION} characters", 2)

    _with_storage(config, lambda storage: storage.create_role(role, description=description))
    typer.echo(f"added role {role!r}")


@role_app.command("remove")
def remove_role(
    name: RoleArg,
    yes: YesOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Delete a role; every user holding it loses it (rules naming it then match nobody)."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    role = _check(name, "role")
    if not yes and not typer.confirm(f"Remove role {role!r} from everyone who holds it?", default=False):
        fail("aborted, nothing removed")

    _with_storage(config, lambda storage: storage.delete_role(role))
    typer.echo(f"removed role {role!r}")


@role_app.command("list")
def list_roles(
    as_json: JsonLinesOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """List roles with their members."""
    config = storage_config(config_path, data_dir, mongo_url, database)

    for role in _with_storage(config, lambda storage: storage.list_roles()):
        if as_json:
            typer.echo(
                json.dumps(
                    {"role": role.name, "description": role.description, "members": list(role.members)}
                )
            )
        else:
            members = ", ".join(role.members) or "-"
            about = f"  ({role.description})" if role.description else ""
            typer.echo(f"{role.name}: {members}{about}")


@role_app.command("assign")
def assign_role(
    name: RoleArg,
    user: UserArg,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Give a role to a user."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    role, user_id = _check(name, "role"), _check(user, "user")

    _with_storage(config, lambda storage: storage.assign_role(user_id, role))
    typer.echo(f"{user_id!r} now holds role {role!r}")


@role_app.command("unassign")
def unassign_role(
    name: RoleArg,
    user: UserArg,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Take a role from a user (its live sessions lose what the role allowed)."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    role, user_id = _check(name, "role"), _check(user, "user")

    _with_storage(config, lambda storage: storage.unassign_role(user_id, role))
    typer.echo(f"{user_id!r} no longer holds role {role!r}")
