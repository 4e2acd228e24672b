"""`mqim group ...`: groups in the server's storage, the administrator's side of `group.*` commands.

The commands write `<data-dir>/mqim.db` directly (the server may be running) and then touch
`<data-dir>/membership.stamp`: a running server re-reads the memberships within about a second,
so its group subscriptions and permissions follow. In cluster mode (`--mongo`) they write the
cluster's MongoDB and increment the membership stamp in the cluster's Redis (`MQIM_REDIS_URL` or
`cluster.redis_url`), which every running node follows the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from mqim.cli._common import fail, open_storage, run, storage_config
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, MongoOpt
from mqim.protocol import InvalidId, validate_id
from mqim.storage import AlreadyExists, GroupRecord, NotFound, Role, Storage, StorageError

group_app = typer.Typer(
    name="group",
    help="Manage groups (in <data-dir>/mqim.db or the cluster's MongoDB; servers follow within a second).",
    no_args_is_help=True,
)

GroupArg = Annotated[str, typer.Argument(help="Group id ([A-Za-z0-9_.-]{1,64}).", show_default=False)]
MembersArg = Annotated[list[str], typer.Argument(help="User ids.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]


def _check(value: str, what: str) -> str:
    try:
        return validate_id(value, what=what)
    except InvalidId as exc:
        fail(exc.message, 2)


def _touch(config: MqimConfig) -> None:
    cluster = config.cluster
    if cluster.mongo_url is not None:
        _tell_cluster(cluster.redis_url, cluster.prefix)
        return
    # Imported here so that `mqim --help` does not load the service stack.
    from mqim.server import touch_membership_stamp

    try:
        touch_membership_stamp(config.server.data_dir)
    except OSError as exc:
        typer.echo(
            f"warning: a running server was not told ({exc}); it applies the change at restart", err=True
        )


def _tell_cluster(redis_url: str | None, prefix: str) -> None:
    if redis_url is None:
        typer.echo(
            "warning: the running nodes were not told (no Redis URL: set MQIM_REDIS_URL or "
            "cluster.redis_url); they apply the change at restart",
            err=True,
        )
        return
    from mqim.cli._cluster_notify import bump_membership_stamp

    try:
        asyncio.run(bump_membership_stamp(redis_url, prefix=prefix))
    except CliError as exc:
        typer.echo(
            f"warning: the running nodes were not told ({exc.message}); they apply it at restart", err=True
        )


async def _require_users(storage: Storage, users: Sequence[str]) -> None:
    missing = [u for u in users if await storage.get_user(u) is None]
    if missing:
        raise CliError(f"unknown users: {', '.join(missing)}")


async def _require_group(storage: Storage, group: str) -> GroupRecord:
    record = await storage.get_group(group)
    if record is None:
        raise CliError(f"group {group!r} not found")
    return record


def _record_json(record: GroupRecord) -> dict[str, Any]:
    return {
        "group": record.group_id,
        "name": record.name,
        "created_ts": record.created_ts,
        "members": {user: role.value for user, role in sorted(record.members.items())},
    }


def _size_check(config: MqimConfig, size: int) -> None:
    limit = config.limits.max_group_members
    if size > limit:
        raise CliError(
            f"a group has at most {limit} members (limits.max_group_members); this would make {size}"
        )


@group_app.command("create")
def create_group(
    group: GroupArg,
    members: Annotated[list[str] | None, typer.Argument(help="Initial members.", show_default=False)] = None,
    owner: Annotated[
        str, typer.Option("--owner", help="The owner (an existing user).", show_default=False)
    ] = "",
    name: Annotated[str | None, typer.Option("--name", help="Display name  [default: the id]")] = None,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Create a group owned by --owner, with optional initial members."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    group_id = _check(group, "group")
    if not owner:
        fail("--owner is required", 2)
    owner_id = _check(owner, "user")
    joiners = [u for u in dict.fromkeys(_check(m, "user") for m in members or []) if u != owner_id]
    display = (name if name is not None else group_id).strip()
    if not display:
        fail("--name must not be empty", 2)

    async def go() -> GroupRecord:
        _size_check(config, 1 + len(joiners))
        async with open_storage(config) as storage:
            try:
                await _require_users(storage, [owner_id, *joiners])
                return await storage.create_group(group_id, name=display, owner=owner_id, members=joiners)
            except AlreadyExists as exc:
                raise CliError(f"group {group_id!r} already exists") from exc
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    record = run(go())
    _touch(config)
    typer.echo(f"created group {record.group_id!r} with {len(record.members)} members")


def _change(config: MqimConfig, group_id: str, users: list[str], *, add: bool) -> GroupRecord:
    async def go() -> GroupRecord:
        async with open_storage(config) as storage:
            try:
                record = await _require_group(storage, group_id)
                if add:
                    new = [u for u in users if u not in record.members]
                    _size_check(config, len(record.members) + len(new))
                    await _require_users(storage, new)
                    changes: dict[str, Role | None] = dict.fromkeys(new, Role.MEMBER)
                else:
                    owners = [u for u in users if record.members.get(u) == Role.OWNER]
                    if owners:
                        raise CliError(f"cannot remove the owner {owners[0]!r}; hand the group over first")
                    changes = {u: None for u in users if u in record.members}
                if not changes:
                    return record
                return await storage.set_members(group_id, changes)
            except NotFound as exc:
                raise CliError(f"group {group_id!r} not found") from exc
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    return run(go())


@group_app.command("add")
def add_members(
    group: GroupArg,
    members: MembersArg,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Add members (existing users) to a group."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    group_id = _check(group, "group")
    users = list(dict.fromkeys(_check(m, "user") for m in members))
    record = _change(config, group_id, users, add=True)
    _touch(config)
    typer.echo(f"group {group_id!r} has {len(record.members)} members")


@group_app.command("remove")
def remove_members(
    group: GroupArg,
    members: MembersArg,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Remove members from a group (not its owner)."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    group_id = _check(group, "group")
    users = list(dict.fromkeys(_check(m, "user") for m in members))
    record = _change(config, group_id, users, add=False)
    _touch(config)
    typer.echo(f"group {group_id!r} has {len(record.members)} members")


@group_app.command("list")
def list_groups(
    user: Annotated[str | None, typer.Option("--user", help="Only the groups of this user.")] = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """List groups: id, name, member count (and the user's role with --user)."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    user_id = _check(user, "user") if user is not None else None

    async def go() -> list[GroupRecord]:
        async with open_storage(config) as storage:
            try:
                if user_id is not None:
                    ids = set(await storage.groups_of(user_id))
                else:
                    ids = set()
                    for account in await storage.list_users():
                        ids.update(await storage.groups_of(account.user_id))
                records = [await storage.get_group(g) for g in sorted(ids)]
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc
            return [r for r in records if r is not None]

    records = run(go())
    rows: list[dict[str, Any]] = []
    for r in records:
        row: dict[str, Any] = {"group": r.group_id, "name": r.name, "count": len(r.members)}
        if user_id is not None:
            row["role"] = r.members[user_id].value if user_id in r.members else None
        rows.append(row)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    header = ["GROUP", "NAME", "MEMBERS"] + (["ROLE"] if user_id is not None else [])
    table = [header] + [[str(v) for v in row.values()] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@group_app.command("info")
def group_info(
    group: GroupArg,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Show a group: name, creation time and members with their roles."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    group_id = _check(group, "group")

    async def go() -> GroupRecord:
        async with open_storage(config) as storage:
            try:
                return await _require_group(storage, group_id)
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    record = run(go())
    if as_json:
        typer.echo(json.dumps(_record_json(record)))
        return
    typer.echo(f"group {record.group_id}  name {record.name!r}  members {len(record.members)}")
    for user, role in sorted(record.members.items()):
        typer.echo(f"  {user}  {role.value}")
