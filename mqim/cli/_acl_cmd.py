"""`mqim acl ...`: ACL rules kept in the server's storage, and a dry run of a decision.

A running server reads the stored rules again within `auth.reload_interval_s` (2 s by default):
new rules apply to live sessions, and subscriptions they no longer allow are removed.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mqim.acl import (
    AclEngine,
    Action,
    Decision,
    Identity,
    IdentityKind,
    InvalidRule,
    MembershipIndex,
    describe_builtins,
    format_rule,
    parse_rule,
)
from mqim.cli._common import fail, open_storage, run, storage_config
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, DatabaseOpt, DataDirOpt, JsonLinesOpt, MongoOpt
from mqim.protocol import InvalidId, parse_conv
from mqim.storage import AccountKind, AclRuleRecord, NotFound, StorageError

MAX_RULE_NAME = 64
"""Longest rule name."""

acl_app = typer.Typer(
    name="acl",
    help=(
        "Manage ACL rules (in <data-dir>/mqim.db, or the cluster's MongoDB with --mongo). A rule is "
        "'<allow|deny> <all|user:NAME|role:NAME> <publish,subscribe,receive> <topic filter>'; "
        "%u and %c stand for the user name and client id. Explicit deny wins; otherwise the first "
        "allow in order (stored rules, then the built-in v1 rules) decides; default deny."
    ),
    no_args_is_help=True,
)


def _label(record: AclRuleRecord) -> str:
    # Same naming as the broker's (mqim.broker._policy.rule_label), without importing the broker.
    return record.name or f"#{record.rule_id}"


@acl_app.command("add")
def add_rule(
    rule: Annotated[str, typer.Argument(help="The rule, quoted as one argument.", show_default=False)],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="A short name shown in decisions (default #ID).")
    ] = None,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Append a rule after the stored ones."""
    config = storage_config(config_path, data_dir, mongo_url, database)
    label = name or ""
    if len(label) > MAX_RULE_NAME or any(ch.isspace() for ch in label) or not label.isprintable():
        fail(f"rule name must be at most {MAX_RULE_NAME} printable characters without spaces", 2)
    try:
        parsed = parse_rule(rule)
    except InvalidRule as exc:
        fail(f"invalid rule: {exc}", 2)
    text = format_rule(parsed)

    async def go() -> AclRuleRecord:
        async with open_storage(config) as storage:
            try:
                return await storage.add_acl_rule(text, name=label)
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    record = run(go())
    typer.echo(f"added rule {_label(record)} (id {record.rule_id}): {record.text}")


@acl_app.command("list")
def list_rules(
    as_json: JsonLinesOpt = False,
    builtin: Annotated[bool, typer.Option("--builtin", help="Also list the built-in v1 rules.")] = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """List the stored rules in evaluation order."""
    config = storage_config(config_path, data_dir, mongo_url, database)

    async def go() -> list[AclRuleRecord]:
        async with open_storage(config) as storage:
            try:
                return await storage.list_acl_rules()
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    records = run(go())
    if as_json:
        for r in records:
            typer.echo(json.dumps({"id": r.rule_id, "name": r.name, "rule": r.text}))
    else:
        for r in records:
            typer.echo(f"{r.rule_id:>5}  {_label(r):<16}  {r.text}")
        if not records:
            typer.echo("no stored rules (the built-in v1 rules apply)", err=True)
    if builtin:
        for line in describe_builtins():
            typer.echo(json.dumps({"builtin": line}) if as_json else f"built-in  {line}")


@acl_app.command("remove")
def remove_rule(
    rule_id: Annotated[int, typer.Argument(help="The rule id (see `mqim acl list`).", show_default=False)],
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Delete a stored rule."""
    config = storage_config(config_path, data_dir, mongo_url, database)

    async def go() -> None:
        async with open_storage(config) as storage:
            try:
                await storage.remove_acl_rule(rule_id)
            except NotFound as exc:
                raise CliError(f"no rule with id {rule_id}") from exc
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc

    run(go())
    typer.echo(f"removed rule {rule_id}")


def _kind(kind: AccountKind) -> IdentityKind:
    if kind == AccountKind.SERVICE:
        return "service"
    if kind == AccountKind.BRIDGE:
        return "bridge"
    return "user"


@acl_app.command("test")
def decide_command(
    user: Annotated[str, typer.Argument(help="The account to test as.", show_default=False)],
    action: Annotated[Action, typer.Argument(help="publish, subscribe or receive.", show_default=False)],
    topic: Annotated[str, typer.Argument(help="Topic name (a filter for subscribe).", show_default=False)],
    client_id: Annotated[str, typer.Option("--client-id", help="Client id for %c rules.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
    data_dir: DataDirOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Decide a request as the running server would, and name the rule that decides it.

    Uses the stored rules, the user's roles, groups and direct conversations from storage.
    Rules given to a server in code (not stored) are not included.
    """
    config = storage_config(config_path, data_dir, mongo_url, database)

    async def go() -> Decision:
        async with open_storage(config) as storage:
            try:
                record = await storage.get_user(user)
                if record is None:
                    raise CliError(f"user {user!r} not found")
                records = await storage.list_acl_rules()
                roles = await storage.roles_of(user)
                groups = await storage.groups_of(user)
                states = await storage.conv_states(user)
            except StorageError as exc:
                raise CliError(f"storage error: {exc}") from exc
        try:
            rules = [parse_rule(r.text, name=_label(r)) for r in records]
        except InvalidRule as exc:
            raise CliError(f"a stored rule is invalid: {exc}") from exc
        membership = MembershipIndex()
        for group in groups:
            membership.add_member(group, user)
        for state in states:
            try:
                kind, ids = parse_conv(state.conv)
            except InvalidId:
                continue
            if kind == "d":
                for other in ids:
                    membership.add_contact(user, other)
        engine = AclEngine(rules=rules, membership=membership, cache_size=0)
        identity = Identity(user=user, client_id=client_id, kind=_kind(record.kind), roles=frozenset(roles))
        return engine.decide(identity, action, topic)

    decision = run(go())
    verdict = "allow" if decision.allowed else "deny"
    if as_json:
        typer.echo(json.dumps({"decision": verdict, "rule": decision.rule, "reason": decision.reason}))
        return
    typer.echo(verdict)
    typer.echo(f"rule: {decision.rule}")
    typer.echo(f"reason: {decision.reason}")
