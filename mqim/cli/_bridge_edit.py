"""Editing `<data_dir>/bridges.json` for `mqim bridge ...`: load, validate, add and remove named
entries, and the storage checks a mapping or command route gets before it is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from mqim.bridge import (
    BRIDGES_FILENAME,
    STATUS_FILENAME,
    BridgeConfigError,
    BridgesFile,
    load_bridges,
    save_bridges,
)
from mqim.cli._common import fail, get_config, open_storage, run
from mqim.cli._config import MqimConfig
from mqim.cli._exceptions import CliError
from mqim.protocol import InvalidId, validate_id
from mqim.storage import Storage, StorageError

_APPLY = "restart the server to apply"

_M = TypeVar("_M", bound=BaseModel)

NameArg = Annotated[str, typer.Argument(help="Name ([A-Za-z0-9_.-]{1,64}).", show_default=False)]


def explain_invalid(exc: ValidationError) -> str:
    """The validation errors of a definition, on one line."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {str(err['msg']).removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def bridge_paths(config_path: Path | None, data_dir: Path | None) -> tuple[Path, Path]:
    """`bridges.json` and `bridges-status.json` of the configured data directory."""
    config = get_config(config_path, {"server.data_dir": data_dir})
    return bridges_path(config), config.server.data_dir / STATUS_FILENAME


def bridges_path(config: MqimConfig) -> Path:
    """`<data_dir>/bridges.json`."""
    return config.server.data_dir / BRIDGES_FILENAME


def checked_name(name: str, what: str) -> str:
    """`name` if it is a valid id, else end the command (code 2)."""
    try:
        return validate_id(name, what=what)
    except InvalidId as exc:
        fail(exc.message, 2)


def load_definitions(path: Path) -> BridgesFile:
    """The definitions file, or end the command (code 2) when it is invalid."""
    try:
        return load_bridges(path)
    except BridgeConfigError as exc:
        fail(str(exc), 2)


def edit_definitions(path: Path, change: Callable[[dict[str, Any]], None]) -> BridgesFile:
    """Apply `change` to the file's JSON form, validate the result and save it."""
    raw = load_definitions(path).model_dump(mode="json", exclude_none=True)
    change(raw)
    try:
        updated = BridgesFile.model_validate(raw)
    except ValidationError as exc:
        fail(f"invalid definition: {explain_invalid(exc)}", 2)
    try:
        save_bridges(path, updated)
    except BridgeConfigError as exc:
        fail(str(exc))
    return updated


def remove_named(path: Path, section: str, name: str, what: str) -> None:
    """Remove the entry `name` from `section` of the file, or end the command if there is none."""

    def change(raw: dict[str, Any]) -> None:
        entries = raw.get(section, [])
        kept = [entry for entry in entries if entry.get("name") != name]
        if len(kept) == len(entries):
            fail(f"{what} {name!r} not found")
        raw[section] = kept

    edit_definitions(path, change)
    typer.echo(f"removed {what} {name!r} ({_APPLY})")


def add_named(path: Path, section: str, entry: dict[str, Any], what: str, *, replace: bool) -> None:
    """Add `entry` to `section` of the file; one of the same name is replaced only with `replace`."""

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

    edit_definitions(path, change)
    typer.echo(f"{'replaced' if replace else 'added'} {what} {name!r} ({_APPLY})")


def given_fields(optional: dict[str, str | None]) -> dict[str, str]:
    """The optional fields that were given."""
    return {key: value for key, value in optional.items() if value is not None}


def validated(model: type[_M], what: str, entry: dict[str, Any], optional: dict[str, str | None]) -> _M:
    """`entry` (plus the `optional` fields that were given) as `model`, or end the command (code 2)."""
    try:
        return model.model_validate({**entry, **given_fields(optional)})
    except ValidationError as exc:
        fail(f"invalid {what}: {explain_invalid(exc)}", 2)


def require_targets(config: MqimConfig, *, users: list[str], group: str | None, member: str | None) -> None:
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
