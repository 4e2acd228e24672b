"""`mqim bridge ...`: bridge accounts (inbound), outbound bridges, IM mappings, command routes.

Accounts live in storage (`<data_dir>/mqim.db`, or the cluster's MongoDB with `--mongo` or the
`[cluster]` section); bridges, mappings and routes in `<data_dir>/bridges.json`, which the server
reads at start; a running server writes `<data_dir>/bridges-status.json`, which `mqim bridge
list` shows. The groups and users a mapping or command route names must exist in storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from mqim.bridge import BridgeConfig, CommandRoute, ImMapping
from mqim.cli._bridge_accounts import account_app
from mqim.cli._bridge_edit import (
    NameArg,
    add_named,
    bridge_paths,
    bridges_path,
    checked_name,
    explain_invalid,
    given_fields,
    remove_named,
    require_targets,
    validated,
)
from mqim.cli._bridge_list import list_bridges
from mqim.cli._common import fail, storage_config
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, MongoOpt

bridge_app = typer.Typer(
    name="bridge",
    help="Bridges to and from other MQTT brokers (Mosquitto, EMQX...) and their mapping into the IM.",
    no_args_is_help=True,
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
    path, _ = bridge_paths(config_path, data_dir)
    entry: dict[str, Any] = {"name": checked_name(name, "bridge"), "remote": remote, "topics": list(topic)}
    for key, value in (("username", username), ("password", password), ("client_id", client_id)):
        if value is not None:
            entry[key] = value
    if cafile is not None:
        entry["cafile"] = str(cafile)
    try:
        BridgeConfig.model_validate(entry)
    except ValidationError as exc:
        fail(f"invalid bridge: {explain_invalid(exc)}", 2)
    add_named(path, "bridges", entry, "bridge", replace=replace)


@bridge_app.command("remove")
def remove_bridge(name: NameArg, data_dir: DataDirOpt = None, config_path: ConfigOpt = None) -> None:
    """Remove an outbound bridge."""
    path, _ = bridge_paths(config_path, data_dir)
    remove_named(path, "bridges", name, "bridge")


bridge_app.command("list")(list_bridges)


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
    path = bridges_path(config)
    entry = {"name": checked_name(name, "mapping"), "source": source, "sender": sender}
    optional = {"group": group, "to": to, "text": text}
    mapping = validated(ImMapping, "mapping", entry, optional)
    users = [mapping.sender] + ([mapping.to] if mapping.to is not None else [])
    require_targets(config, users=users, group=mapping.group, member=mapping.sender)
    add_named(path, "mappings", {**entry, **given_fields(optional)}, "mapping", replace=replace)


@map_app.command("remove")
def remove_mapping(name: NameArg, data_dir: DataDirOpt = None, config_path: ConfigOpt = None) -> None:
    """Remove a mapping."""
    path, _ = bridge_paths(config_path, data_dir)
    remove_named(path, "mappings", name, "mapping")


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
    path = bridges_path(config)
    entry = {"name": checked_name(name, "command route"), "topic_prefix": topic_prefix}
    optional = {"group": group, "user": user}
    route = validated(CommandRoute, "command route", entry, optional)
    require_targets(config, users=[route.user] if route.user else [], group=route.group, member=None)
    add_named(path, "commands", {**entry, **given_fields(optional)}, "command route", replace=replace)


@command_app.command("remove")
def remove_command(name: NameArg, data_dir: DataDirOpt = None, config_path: ConfigOpt = None) -> None:
    """Remove a command route."""
    path, _ = bridge_paths(config_path, data_dir)
    remove_named(path, "commands", name, "command route")
