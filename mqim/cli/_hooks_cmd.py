"""`mqim hooks list|test`: the configured webhook endpoints, their backlog, and a signed test POST."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mqim.cli._common import fail, get_config
from mqim.cli._options import ConfigOpt, DataDirOpt
from mqim.hooks import (
    OUTBOX_FILENAME,
    HookEndpoint,
    HookHttpError,
    HooksConfig,
    client_for,
    probe_event,
    signed_headers,
)

hooks_app = typer.Typer(
    name="hooks",
    help="Webhooks (\\[hooks] in the configuration): list the endpoints, send a signed test event.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _backlog(data_dir: Path) -> dict[str, tuple[int, float | None]]:
    """Undelivered events per endpoint in the outbox file: (count, oldest creation time)."""
    path = data_dir / OUTBOX_FILENAME
    if not path.exists():
        return {}
    try:
        # Read-only: a running server owns the file; WAL lets us read beside it.
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0) as conn:
            rows = conn.execute("SELECT endpoint, COUNT(*), MIN(created) FROM outbox GROUP BY endpoint")
            return {str(name): (int(count), oldest) for name, count, oldest in rows}
    except sqlite3.Error as exc:
        fail(f"cannot read {path}: {exc}")


@hooks_app.command("list")
def list_command(
    data_dir: DataDirOpt = None, config_path: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Endpoints, the events each gets, and how many events wait in the outbox for it."""
    config = get_config(config_path, {"server.data_dir": data_dir})
    hooks = config.hooks
    backlog = _backlog(config.server.data_dir)
    now = time.time()
    entries: list[dict[str, Any]] = []
    for endpoint in hooks.endpoints:
        pending, oldest = backlog.get(endpoint.name, (0, None))
        entries.append(
            {
                "name": endpoint.name,
                "url": endpoint.url,
                "events": list(endpoint.events),
                "preview": endpoint.include_preview,
                "pending": pending,
                "oldest_s": round(now - oldest, 1) if oldest is not None else None,
            }
        )
    if as_json:
        typer.echo(json.dumps({"endpoints": entries, "bounds": _bounds(hooks)}, indent=2))
        return
    if not entries:
        typer.echo("no webhook endpoints configured ([[hooks.endpoints]] in the configuration)")
        return
    typer.echo(f"{'NAME':<16} {'PENDING':>8} {'OLDEST':>8}  {'PREVIEW':<7}  {'EVENTS':<40} URL")
    for entry in entries:
        age = f"{entry['oldest_s']:.0f}s" if entry["oldest_s"] is not None else "-"
        events = ",".join(entry["events"])
        preview = "yes" if entry["preview"] else "no"
        name, pending, url = entry["name"], entry["pending"], entry["url"]
        typer.echo(f"{name:<16} {pending:>8} {age:>8}  {preview:<7}  {events:<40} {url}")


def _bounds(hooks: HooksConfig) -> dict[str, Any]:
    return {"max_outbox_rows": hooks.max_outbox_rows, "max_outbox_bytes": hooks.max_outbox_bytes}


async def _probe(endpoint: HookEndpoint, hooks: HooksConfig) -> int:
    delivery, body = probe_event(endpoint=endpoint.name, now_ms=int(time.time() * 1000))
    client = client_for(endpoint, max_response_bytes=hooks.max_response_bytes)
    try:
        headers = signed_headers(endpoint, event="test", delivery=delivery, body=body, now=time.time())
        return await client.post(body, headers)
    finally:
        await client.close()


@hooks_app.command("test")
def probe_command(
    name: Annotated[str, typer.Argument(help="Endpoint name (see `mqim hooks list`).", show_default=False)],
    config_path: ConfigOpt = None,
) -> None:
    """POST a signed `test` event to an endpoint now and print the HTTP status (exit 1 unless 2xx)."""
    config = get_config(config_path)
    endpoint = config.hooks.endpoint(name)
    if endpoint is None:
        known = ", ".join(e.name for e in config.hooks.endpoints) or "none"
        fail(f"no webhook endpoint {name!r} (configured: {known})", 2)
    try:
        status = asyncio.run(_probe(endpoint, config.hooks))
    except HookHttpError as exc:
        fail(f"{name}: {endpoint.url}: {exc}")
    typer.echo(f"{name}: HTTP {status}")
    if not 200 <= status < 300:
        raise typer.Exit(1)
