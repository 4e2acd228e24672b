"""`mqim bridge list`: the outbound bridges, mappings and command routes with their status."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from mqim.bridge import read_status
from mqim.cli._bridge_edit import bridge_paths, load_definitions
from mqim.cli._options import ConfigOpt, DataDirOpt, JsonOpt


def _age(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    seconds = max(0, int(time.time() - ts))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


def list_bridges(
    as_json: JsonOpt = False, data_dir: DataDirOpt = None, config_path: ConfigOpt = None
) -> None:
    """Show the outbound bridges, mappings and command routes with their status and counters.

    Status comes from the running server (`bridges-status.json`, refreshed every second).
    """
    path, status_path = bridge_paths(config_path, data_dir)
    config = load_definitions(path)
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
