"""`mqim status`: what a running node says about itself, read from its admin listener's `/status`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mqim.cli._common import get_config, run
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The node's admin listener, e.g. http://127.0.0.1:9883/  [default: from [admin] in the config]",
        show_default=False,
    ),
]


def status_command(
    url: UrlOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status document as JSON.")] = False,
    config_path: ConfigOpt = None,
) -> None:
    """Listeners, connections, sessions, queues, storage and cluster membership of a running node."""
    from mqim.admin import AdminError, fetch_status

    if url is None:
        admin = get_config(config_path).admin
        # A listener bound to every interface is reached locally through the loopback address.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(admin.host, admin.host)
        url = f"http://[{host}]:{admin.port}/" if ":" in host else f"http://{host}:{admin.port}/"

    async def go() -> dict[str, Any]:
        try:
            return await fetch_status(url)
        except AdminError as exc:
            raise CliError(f"{exc} (is the server running with its admin listener on?)") from exc

    doc = run(go())
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for line in describe(doc):
        typer.echo(line)


def describe(doc: dict[str, Any]) -> list[str]:
    """The status document as lines for a human."""
    node = doc.get("node_id") or "-"
    uptime = float(doc.get("uptime_s", 0))
    lines = [f"mqim {doc.get('version', '?')}  {doc.get('mode', '?')}  node {node}  up {uptime:.0f}s"]
    for listener in doc.get("listeners", []):
        lines.append(
            f"listener {listener['name']:<10} {listener['kind']}://{listener['host']}:{listener['port']}"
        )
    conns = doc.get("connections", {})
    per = ", ".join(
        f"{listener}: " + " ".join(f"{kind}={n}" for kind, n in sorted(kinds.items()))
        for listener, kinds in sorted(conns.get("by_listener", {}).items())
    )
    lines.append(f"connections {conns.get('total', 0)}" + (f" ({per})" if per else ""))
    sessions = doc.get("sessions", {})
    lines.append(
        f"sessions    live {sessions.get('live', 0)}, persistent {sessions.get('persistent', 0)}, "
        f"offline {sessions.get('offline', 0)}"
    )
    queues = doc.get("queues", {})
    lines.append(
        f"queues      {queues.get('messages', 0)} messages, {queues.get('bytes', 0)} bytes, "
        f"{queues.get('overflowed', 0)} overflowed, {queues.get('held_uplinks', 0)} uplinks held"
    )
    messages = doc.get("messages", {})
    for direction in ("received", "sent"):
        counts = messages.get(direction, {})
        lines.append(f"messages {direction:<8} " + " ".join(f"{c}={n}" for c, n in counts.items()))
    storage = doc.get("storage", {})
    lines.append(
        f"storage     {storage.get('kind', '?')} ({storage.get('data_dir', '')}); session commits "
        f"{storage.get('session_commits', 0)}, failed {storage.get('session_commit_failures', 0)}"
    )
    cluster = doc.get("cluster")
    if cluster:
        members = cluster.get("members")
        who = (
            ", ".join(f"{m['node_id']}({'up' if m['alive'] else 'DOWN'})" for m in members)
            if members is not None
            else "unknown (Redis unreachable)"
        )
        lines.append(
            f"cluster     redis {'up' if cluster.get('redis_up') else 'DOWN'}, "
            f"{'FENCED' if cluster.get('fenced') else 'serving'}, {cluster.get('adoptions', 0)} adoptions; "
            f"members {who}"
        )
    return lines
