"""`mqim broker` (one cluster node) and `mqim cluster status`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Annotated

import typer

from mqim.cli._common import fail, get_config, logic_limits, run, run_until_signal
from mqim.cli._exceptions import CliError
from mqim.cli._logging import configure_logging
from mqim.cli._options import (
    ConfigOpt,
    DatabaseOpt,
    DataDirOpt,
    JsonOpt,
    ListenHostOpt,
    ListenPortOpt,
    LogFormatOpt,
    MongoOpt,
    PrefixOpt,
    RedisOpt,
)

if TYPE_CHECKING:
    from mqim.cluster import NodeStatus

_log = logging.getLogger("mqim.cli.cluster")

cluster_app = typer.Typer(help="Cluster mode: inspect the nodes.", no_args_is_help=True)


def broker_command(
    node_id: Annotated[
        str | None,
        typer.Option("--node-id", help="This node's id, unique in the cluster  [default: cluster.node_id]"),
    ] = None,
    redis_url: RedisOpt = None,
    mongo_url: MongoOpt = None,
    database: DatabaseOpt = None,
    host: ListenHostOpt = None,
    port: ListenPortOpt = None,
    no_logic: Annotated[
        bool, typer.Option("--no-logic", help="No embedded logic: `mqim logic --shared` workers do it.")
    ] = False,
    prefix: PrefixOpt = None,
    heartbeat_s: Annotated[
        float | None,
        typer.Option("--heartbeat", help="Heartbeat period, seconds  [default: cluster.heartbeat_s, 1]"),
    ] = None,
    node_ttl_s: Annotated[
        float | None,
        typer.Option(
            "--node-ttl",
            help="A node silent this long is dead (adopted), seconds  [default: cluster.node_ttl_s, 4]",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    log_format: LogFormatOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Run one cluster node: broker (+ logic unless --no-logic), MongoDB storage, Redis sessions.

    Listeners, limits, authentication and logging come from the configuration like `mqim serve`;
    the node id, Redis and MongoDB from the flags, MQIM_REDIS_URL / MQIM_MONGO_URL or the
    `[cluster]` section. Stops cleanly on Ctrl-C or SIGTERM (its sessions are then adopted by
    the other nodes).
    """
    config = get_config(
        config_path,
        {
            "server.host": host,
            "server.port": port,
            "server.data_dir": data_dir,
            "cluster.node_id": node_id,
            "cluster.redis_url": redis_url,
            "cluster.mongo_url": mongo_url,
            "cluster.database": database,
            "cluster.prefix": prefix,
            "cluster.heartbeat_s": heartbeat_s,
            "cluster.node_ttl_s": node_ttl_s,
            "log.format": log_format,
        },
    )
    cluster = config.cluster
    node = _required(cluster.node_id, "cluster.node_id", "--node-id")
    redis = _required(cluster.redis_url, "cluster.redis_url", "--redis or MQIM_REDIS_URL")
    mongo = _required(cluster.mongo_url, "cluster.mongo_url", "--mongo or MQIM_MONGO_URL")
    configure_logging(config.log)
    # Imported here so that other commands do not load the broker (and amqtt).
    from mqim.auth import AuthError
    from mqim.broker import BrokerError
    from mqim.cli._serve import admin_options, auth_options, broker_settings, listeners
    from mqim.cluster import ClusterSettings
    from mqim.server import ClusterServer
    from mqim.storage import StorageError

    async def go() -> None:
        server = ClusterServer(
            node_id=node,
            redis_url=redis,
            mongo_url=mongo,
            database=cluster.database,
            data_dir=config.server.data_dir,
            listeners=listeners(config),
            settings=broker_settings(config),
            cluster=ClusterSettings(
                node_id=node,
                prefix=cluster.prefix,
                heartbeat_s=cluster.heartbeat_s,
                node_ttl_s=cluster.node_ttl_s,
            ),
            logic_limits=logic_limits(config),
            embedded_logic=not no_logic,
            allow_anonymous=config.auth.allow_anonymous,
            auth=auth_options(config),
            admin=admin_options(config),
            sys_interval_s=config.sys.interval_s,
        )
        try:
            async with server:
                for spec in server.listeners:
                    print(
                        f"mqim node {node} listening on {spec.kind}://{spec.host}:{server.port(spec.name)}",
                        flush=True,
                    )
                await run_until_signal(_forever(), name=f"mqim-node:{node}")
        except (AuthError, BrokerError, StorageError) as exc:  # a token key file, say
            raise CliError(f"node {node}: {exc}") from exc

    run(go())


def _required(value: str | None, key: str, flag: str) -> str:
    if value is None:
        fail(f"{key} is not set: give {flag}, or set it in the [cluster] section", 2)
    return value


async def _forever() -> None:
    await asyncio.Event().wait()  # until run_until_signal cancels it


@cluster_app.command("status")
def status_command(
    redis_url: RedisOpt = None,
    prefix: PrefixOpt = None,
    as_json: JsonOpt = False,
    config_path: ConfigOpt = None,
) -> None:
    """Nodes, whether they are alive, clients per node, queue depths, stream lag, recent deaths.

    `--json` prints `{"nodes": [...], "deaths": [...]}`; a death names the node, when it was
    found dead and adopted, and by whom.
    """
    from mqim.broker import BrokerError
    from mqim.cluster import read_cluster_status, read_node_deaths

    cluster = get_config(config_path, {"cluster.redis_url": redis_url, "cluster.prefix": prefix}).cluster
    redis = _required(cluster.redis_url, "cluster.redis_url", "--redis or MQIM_REDIS_URL")

    async def go() -> None:
        try:
            nodes = await read_cluster_status(redis, prefix=cluster.prefix)
            deaths = await read_node_deaths(redis, prefix=cluster.prefix)
        except BrokerError as exc:
            raise CliError(str(exc)) from exc
        if as_json:
            doc = {"nodes": [_as_dict(n) for n in nodes], "deaths": [_as_dict(d) for d in deaths]}
            typer.echo(json.dumps(doc, indent=2))
            return
        _print_nodes(nodes)
        if deaths:
            typer.echo("\nrecent node deaths (newest first):")
            for death in deaths:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(death.detected))
                typer.echo(
                    f"  {when}  {death.node} died; adopted by {death.adopted_by} in "
                    f"{death.adopted - death.detected:.1f}s ({death.sessions} sessions, "
                    f"{death.entries} stream entries)"
                )

    run(go())


def _print_nodes(nodes: list[NodeStatus]) -> None:
    if not nodes:
        typer.echo("no nodes registered")
        return
    typer.echo(
        f"{'node':<16} {'state':<6} {'conns':>6} {'sessions':>8} {'queued':>7} "
        f"{'owned':>6} {'routes':>6} {'stream':>7} {'pending':>7} {'lag':>6}"
    )
    for node in nodes:
        beat = node.heartbeat
        lag = "?" if node.lag is None else str(node.lag)
        typer.echo(
            f"{node.node_id:<16} {'up' if node.alive else 'DOWN':<6} {beat.get('connections', '-'):>6} "
            f"{beat.get('sessions', '-'):>8} {beat.get('queued', '-'):>7} {node.owned_sessions:>6} "
            f"{node.routes:>6} {node.stream_length:>7} {node.pending:>7} {lag:>6}"
        )


def _as_dict(node: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    assert is_dataclass(node)
    assert not isinstance(node, type)
    return asdict(node)
