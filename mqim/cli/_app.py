"""The `mqim` typer application: every command is registered here, implemented in its own module."""

from __future__ import annotations

from typing import Annotated

import typer

import mqim
from mqim.cli._acl_cmd import acl_app
from mqim.cli._bench_cmd import bench_command
from mqim.cli._bridge_cmd import bridge_app
from mqim.cli._cluster_cmd import broker_command, cluster_app
from mqim.cli._common import get_config
from mqim.cli._group_cmd import group_app
from mqim.cli._hooks_cmd import hooks_app
from mqim.cli._logic_cmd import logic_command
from mqim.cli._messaging import send_command, tail_command
from mqim.cli._options import ConfigOpt, DataDirOpt, ListenHostOpt, ListenPortOpt, LogFormatOpt
from mqim.cli._role_cmd import role_app
from mqim.cli._status_cmd import status_command
from mqim.cli._token_cmd import token_app
from mqim.cli._users import users_app

app = typer.Typer(
    name="mqim",
    help="Instant messaging over MQTT: broker, logic service, administration and a test client.",
    no_args_is_help=True,
    add_completion=False,
    # Locals of a failing frame may hold passwords: never print them.
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mqim {mqim.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True),
    ] = False,
) -> None:
    """Instant messaging over MQTT."""


@app.command("serve")
def serve(
    host: ListenHostOpt = None,
    port: ListenPortOpt = None,
    data_dir: DataDirOpt = None,
    log_format: LogFormatOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Run the single-node server: broker, logic service and SQLite storage in one process."""
    config = get_config(
        config_path,
        {"server.host": host, "server.port": port, "server.data_dir": data_dir, "log.format": log_format},
    )
    # Imported here so that other commands do not load the broker (and amqtt).
    from mqim.cli._serve import serve_command

    serve_command(config)


app.command("logic")(logic_command)
app.command("send")(send_command)
app.command("tail")(tail_command)
app.command("bench")(bench_command)
app.command("status")(status_command)
app.add_typer(users_app, name="user")
app.add_typer(group_app, name="group")
app.add_typer(acl_app, name="acl")
app.add_typer(role_app, name="role")
app.add_typer(token_app, name="token")
app.add_typer(bridge_app, name="bridge")
app.command("broker")(broker_command)
app.add_typer(cluster_app, name="cluster")
app.add_typer(hooks_app, name="hooks")


def main() -> None:
    """Entry point of the `mqim` console script."""
    app()
