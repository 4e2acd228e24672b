"""`mqim bridge ...`: bridge accounts (inbound), outbound bridges, IM mappings, command routes.

Accounts live in storage (`<data_dir>/mqim.db`, or the cluster's MongoDB with `--mongo` or the
`[cluster]` section); bridges, mappings and routes in `<data_dir>/bridges.json`, which the server
reads at start; a running server writes `<data_dir>/bridges-status.json`, which `mqim bridge
list` shows. The groups and users a mapping or command route names must exist in storage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from mqim.bridge import (
    BRIDGES_FILENAME,
    STATUS_FILENAME,
    BridgeConfig,
    BridgeConfigError,
    BridgesFile,
    CommandRoute,
    ImMapping,
    load_bridges,
    read_status,
    save_bridges,
)
from mqim.cli._common import (
    ConfigOpt,
    DatabaseOpt,
    DataDirOpt,
    MongoOpt,
    fail,
    get_config,
    open_storage,
    run,
    storage_config,
)
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError
from mqim.protocol import InvalidId, validate_id
from mqim.storage import AccountKind, AlreadyExists, NotFound, Storage, StorageError, UserRecord

MAX_PASSWORD_LENGTH = 1024
"""Longest password accepted."""

_APPLY = "restart the server to apply"

_M = TypeVar("_M", bound=BaseModel)

bridge_app = typer.Typer(
    name="bridge",
    help="Bridges to and from other MQTT brokers (Mosquitto, EMQX...) and their mapping into the IM.",
    no_args_is_help=True,
)
account_app = typer.Typer(
    name="account", help="Accounts inbound bridges log in with (kind bridge).", no_args_is_help=True
)
map_app = typer.Typer(
    name="map", help="Rules turning bridged device messages into conversation messages.", no_args_is_help=True
)
command_app = typer.Typer(
    name="command", help="Routes sending conversation commands out to devices.", no_args_is_help=True
)
bridge_app.add_typer(account_app)
bridge_app.add_typer(map_app)
bridge_app.add_typer(command_app)

NameArg = Annotated[str, typer.Argument(help="Name ([A-Za-z0-9_.-]{1,64}).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _explain(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {str(err['msg']).removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def _paths(config_path: Path | None, data_dir: Path | None) -> tuple[Path, Path]:
    config = get_config(config_path, {"server.data_dir": data_dir})
    return _bridges_path(config), config.server.data_dir / STATUS_FILENAME


def _bridges_path(config: MqimConfig) -> Path:
    return config.server.data_dir / BRIDGES_FILENAME


def _name(name: str, what: str) -> str:
    try:
        return validate_id(name, what=what)
    except InvalidId as exc:
        fail(exc.message, 2)


def _load(path: Path) -> BridgesFile:
    try:
        return load_bridges(path)
    except BridgeConfigError as exc:
        fail(str(exc), 2)


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> BridgesFile:
    """Apply `change` to the file's JSON form, validate the result and save it."""
    raw = _load(path).model_dump(mode="json", exclude_none=True)
    change(raw)
    try:
        updated = BridgesFile.model_validate(raw)
    except ValidationError as exc:
        fail(f"invalid definition: {_explain(exc)}", 2)
    try:
        save_bridges(path, updated)
    except BridgeConfigError as exc:
        fail(str(exc))
    return updated


def _remove_named(path: Path, section: str, name: str, what: str) -> None:
    def change(raw: dict[str, Any]) -> None:
        entries = raw.get(section, [])
        kept = [entry for entry in entries if entry.get("name") != name]
        if len(kept) == len(entries):
            fail(f"{what} {name!r} not found")
        raw[section] = kept

    _edit(path, change)
    typer.echo(f"removed {what} {name!r} ({_APPLY})")


def _add_named(path: Path, section: str, entry: dict[str, Any], what: str, *, replace: bool) -> None:
    name = entry["name"]

    def change(raw: dict[str, Any]) -> None:
        entries = raw.setdefault(section, [])
        existing = [i for i, e in enumerate(entries) if e.get("name") == name]
        if existing and not replace:
            fail(f"{what} {name!r} already exists (use --replace)")
        if existing:
            entries[existing[0]] = entry
        else:
            entries.append(entry)

    _edit(path, change)
    typer.echo(f"{'replaced' if replace else 'added'} {what} {name!r} ({_APPLY})")


# -- accounts ----------------------------------------------------------------------------------
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
    account = _name(name, "bridge account")
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
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Delete a bridge account."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    account = _name(name, "bridge account")
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


# -- outbound bridges --------------------------------------------------------------------------
@bridge_app.command("add")
def add_bridge(
    name: NameArg,
    remote: Annotated[
        str, typer.Option("--remote", help="Remote broker: mqtt://host[:port] or mqtts://host[:port].")
    ],
    topic: Annotated[
        list[str],
        typer.Option(
            "--topic",
            "-t",
            help='Mosquitto topic rule, repeatable: "PATTERN in|out|both QOS [LOCAL_PREFIX REMOTE_PREFIX]".',
        ),
    ],
    username: Annotated[str | None, typer.Option("--username", "-u", help="User name on the remote.")] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            "-p",
            envvar="MQIM_BRIDGE_PASSWORD",
            help="Password on the remote (env MQIM_BRIDGE_PASSWORD).",
        ),
    ] = None,
    client_id: Annotated[
        str | None, typer.Option("--client-id", help="Client id on the remote  [default: mqim-bridge-NAME]")
    ] = None,
    cafile: Annotated[
        Path | None, typer.Option("--cafile", help="CA bundle to verify an mqtts:// remote.", dir_okay=False)
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a bridge of the same name.")] = False,
    data_dir: DataDirOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Define an outbound bridge: mqim connects to the remote and maps the topics."""
    path, _ = _paths(config_path, data_dir)
    entry: dict[str, Any] = {"name": _name(name, "bridge"), "remote": remote, "topics": list(topic)}
    for key, value in (("username", username), ("password", password), ("client_id", client_id)):
        if value is not None:
            entry[key] = value
    if cafile is not None:
        entry["cafile"] = str(cafile)
    try:
        BridgeConfig.model_validate(entry)
    except ValidationError as exc:
        fail(f"invalid bridge: {_explain(exc)}", 2)
    _add_named(path, "bridges", entry, "bridge", replace=replace)


@bridge_app.command("remove")
def remove_bridge(name: NameArg, data_dir: DataDirOpt = None, config_path: ConfigOpt = None) -> None:
    """Remove an outbound bridge."""
    path, _ = _paths(config_path, data_dir)
    _remove_named(path, "bridges", name, "bridge")


def _age(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    seconds = max(0, int(time.time() - ts))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


@bridge_app.command("list")
def list_bridges(
    as_json: JsonOpt = False, data_dir: DataDirOpt = None, config_path: ConfigOpt = None
) -> None:
    """Show the outbound bridges, mappings and command routes with their status and counters.

    Status comes from the running server (`bridges-status.json`, refreshed every second).
    """
    path, status_path = _paths(config_path, data_dir)
    config = _load(path)
    status = read_status(status_path)
    outbound = status.get("outbound", {})
    mappings = status.get("mappings", {})
    commands = status.get("commands", {})
    inbound = status.get("inbound", {})
    if as_json:
        doc = {
            "bridges": [
                {
                    **b.model_dump(mode="json", exclude={"password"}, exclude_none=True),
                    "status": outbound.get(b.name),
                }
                for b in config.bridges
            ],
            "mappings": [
                {**m.model_dump(mode="json", exclude_none=True), "status": mappings.get(m.name)}
                for m in config.mappings
            ],
            "commands": [
                {**c.model_dump(mode="json", exclude_none=True), "status": commands.get(c.name)}
                for c in config.commands
            ],
            "inbound": inbound,
            "status_ts": status.get("ts"),
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    if not (config.bridges or config.mappings or config.commands or inbound):
        typer.echo(f"no bridges (defined in {path})")
        return
    if config.bridges:
        rows: list[tuple[str, ...]] = [
            ("BRIDGE", "REMOTE", "STATE", "IN", "OUT", "LOOPS", "OVERFLOW", "ERRORS", "PENDING")
        ]
        for bridge in config.bridges:
            st = outbound.get(bridge.name) or {}
            rows.append(
                (
                    bridge.name,
                    bridge.remote,
                    str(st.get("state", "not running")),
                    *(str(st.get(k, "-")) for k in ("messages_in", "messages_out", "dropped_loops")),
                    *(str(st.get(k, "-")) for k in ("dropped_overflow", "errors", "pending_out")),
                )
            )
        _table(rows)
        for bridge in config.bridges:
            for rule in bridge.topics:
                typer.echo(f"  {bridge.name}: topic {rule}")
            error = (outbound.get(bridge.name) or {}).get("last_error")
            if error:
                typer.echo(f"  {bridge.name}: last error: {error}")
    if config.mappings:
        typer.echo("")
        rows = [("MAPPING", "SOURCE", "SENDER", "TARGET", "IN", "ERRORS")]
        for m in config.mappings:
            st = mappings.get(m.name) or {}
            target = f"group {m.group}" if m.group else f"user {m.to}"
            rows.append(
                (
                    m.name,
                    m.source,
                    m.sender,
                    target,
                    str(st.get("messages_in", "-")),
                    str(st.get("errors", "-")),
                )
            )
        _table(rows)
    if config.commands:
        typer.echo("")
        rows = [("COMMAND", "FROM", "TO", "OUT", "ERRORS")]
        for c in config.commands:
            st = commands.get(c.name) or {}
            source = f"group {c.group}" if c.group else f"user {c.user}"
            rows.append(
                (
                    c.name,
                    source,
                    f"{c.topic_prefix}/...",
                    str(st.get("messages_out", "-")),
                    str(st.get("errors", "-")),
                )
            )
        _table(rows)
    if inbound:
        typer.echo("")
        rows = [("INBOUND", "STATE", "CLIENT", "SINCE")]
        for name, st in sorted(inbound.items()):
            state = {"1": "connected", "0": "disconnected"}.get(str(st.get("state")), str(st.get("state")))
            rows.append((name, state, str(st.get("client_id", "-")), _age(st.get("ts"))))
        _table(rows)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


# -- IM mappings -------------------------------------------------------------------------------
@map_app.command("add")
def add_mapping(
    name: NameArg,
    source: Annotated[
        str, typer.Option("--source", help="Topic filter of device messages, e.g. bridge/plant7/alarms/+.")
    ],
    sender: Annotated[str, typer.Option("--sender", help="Account the messages are sent as (e.g. plant7).")],
    group: Annotated[str | None, typer.Option("--group", help="Target group.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Target user (direct conversation).")] = None,
    text: Annotated[
        str | None, typer.Option("--text", help="Text template: ${topic}, ${last}, ${payload}.")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a mapping of the same name.")] = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Turn device messages on SOURCE into conversation messages from SENDER.

    SENDER and the target (--group, of which SENDER must be a member, or --to) must exist.
    """
    config = storage_config(config_path, data_dir, mongo_url, database)
    path = _bridges_path(config)
    entry = {"name": _name(name, "mapping"), "source": source, "sender": sender}
    optional = {"group": group, "to": to, "text": text}
    mapping = _validated(ImMapping, "mapping", entry, optional)
    users = [mapping.sender] + ([mapping.to] if mapping.to is not None else [])
    _require_targets(config, users=users, group=mapping.group, member=mapping.sender)
    _add_named(path, "mappings", {**entry, **_given(optional)}, "mapping", replace=replace)


@map_app.command("remove")
def remove_mapping(name: NameArg, data_dir: DataDirOpt = None, config_path: ConfigOpt = None) -> None:
    """Remove a mapping."""
    path, _ = _paths(config_path, data_dir)
    _remove_named(path, "mappings", name, "mapping")


def _given(optional: dict[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in optional.items() if value is not None}


def _validated(model: type[_M], what: str, entry: dict[str, Any], optional: dict[str, str | None]) -> _M:
    """`entry` (plus the `optional` fields that were given) as `model`, or end the command (code 2)."""
    try:
        return model.model_validate({**entry, **_given(optional)})
    except ValidationError as exc:
        fail(f"invalid {what}: {_explain(exc)}", 2)


def _require_targets(config: MqimConfig, *, users: list[str], group: str | None, member: str | None) -> None:
    """End the command unless every user in `users` and `group` exist (and `member` is in `group`).

    A rule naming what does not exist would fail on every message, far from where it was made.
    """

    async def check(storage: Storage) -> None:
        missing = [user for user in dict.fromkeys(users) if await storage.get_user(user) is None]
        if missing:
            raise CliError(f"unknown users: {', '.join(missing)} (create them with `mqim user add`)")
        if group is None:
            return
        record = await storage.get_group(group)
        if record is None:
            raise CliError(f"group {group!r} not found (create it with `mqim group create`)")
        if member is not None and member not in record.members:
            raise CliError(
                f"{member!r} is not a member of group {group!r}, so its messages would be refused "
                f"(add it with `mqim group add {group} {member}`)"
            )

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                await check(storage)
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    run(go())


# -- command routes ----------------------------------------------------------------------------
@command_app.command("add")
def add_command(
    name: NameArg,
    topic_prefix: Annotated[
        str, typer.Option("--topic-prefix", help="Where commands go, e.g. bridge/plant7/cmd.")
    ],
    group: Annotated[str | None, typer.Option("--group", help="Group whose messages carry commands.")] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="User whose inbox messages carry commands.")
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a route of the same name.")] = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Publish messages carrying `data.device_cmd` on TOPIC_PREFIX/{data.device or all}.

    The group or user must exist.
    """
    config = storage_config(config_path, data_dir, mongo_url, database)
    path = _bridges_path(config)
    entry = {"name": _name(name, "command route"), "topic_prefix": topic_prefix}
    optional = {"group": group, "user": user}
    route = _validated(CommandRoute, "command route", entry, optional)
    _require_targets(config, users=[route.user] if route.user else [], group=route.group, member=None)
    _add_named(path, "commands", {**entry, **_given(optional)}, "command route", replace=replace)


@command_app.command("remove")
def remove_command(name: NameArg, data_dir: DataDirOpt = None, config_path: ConfigOpt = None) -> None:
    """Remove a command route."""
    path, _ = _paths(config_path, data_dir)
    _remove_named(path, "commands", name, "command route")
