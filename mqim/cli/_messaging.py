"""`mqim send` and `mqim tail`: a user's view of the system through the client SDK."""

from __future__ import annotations

import json
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

import typer

from mqim.cli._common import connect_host, fail, get_config, run, tls_context
from mqim.cli._exceptions import CliError
from mqim.cli._options import ConfigOpt, HostOpt, PortOpt
from mqim.client import (
    AckTimeout,
    AuthError,
    ClientError,
    ConnectError,
    InvalidRequest,
    MqimClient,
    SendError,
)
from mqim.protocol import Ack

AsOpt = Annotated[str, typer.Option("--as", help="The user to act as.", show_default=False)]
PasswordOpt = Annotated[
    str,
    typer.Option(
        "--password",
        "-p",
        envvar="MQIM_PASSWORD",
        prompt=True,
        hide_input=True,
        help="The user's password (env MQIM_PASSWORD); prompted for when omitted.",
        show_default=False,
    ),
]
TlsOpt = Annotated[bool, typer.Option("--tls", help="Connect with TLS, verifying the server.")]
CaFileOpt = Annotated[
    Path | None,
    typer.Option("--cafile", help="CA bundle to verify the server with (implies --tls).", dir_okay=False),
]
ClientIdOpt = Annotated[str | None, typer.Option("--client-id", help="MQTT client id.", show_default=False)]


def _client_error(exc: ClientError) -> CliError:
    if isinstance(exc, AuthError):
        return CliError(f"authentication failed: {exc}")
    if isinstance(exc, InvalidRequest):
        return CliError(f"invalid message: {exc}", exit_code=2)
    if isinstance(exc, SendError):
        return CliError(f"server refused the message: {exc}")
    if isinstance(exc, AckTimeout | ConnectError):
        return CliError(str(exc))
    return CliError(f"client error: {exc}")


def send_command(
    as_user: AsOpt,
    password: PasswordOpt,
    text: Annotated[str | None, typer.Argument(help="Text of the message.", show_default=False)] = None,
    to: Annotated[str | None, typer.Option("--to", help="Recipient user.", show_default=False)] = None,
    group: Annotated[str | None, typer.Option("--group", help="Recipient group.", show_default=False)] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Structured content: a JSON object.", show_default=False)
    ] = None,
    message_id: Annotated[
        str | None,
        typer.Option(
            "--id", help="Idempotency key; sending again with it creates nothing new.", show_default=False
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the ack (per attempt).", min=0.1)
    ] = 10.0,
    host: HostOpt = None,
    port: PortOpt = None,
    tls: TlsOpt = False,
    cafile: CaFileOpt = None,
    client_id: ClientIdOpt = None,
    config_path: ConfigOpt = None,
) -> None:
    """Send a message and print the server's ack as JSON."""
    if (to is None) == (group is None):
        fail("give exactly one of --to and --group", 2)
    structured: dict[str, Any] | None = None
    if data is not None:
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            fail(f"--data is not JSON: {exc}", 2)
        if not isinstance(parsed, dict):
            fail("--data must be a JSON object", 2)
        structured = parsed
    if text is None and structured is None:
        fail("give a TEXT argument or --data", 2)
    config = get_config(config_path)

    async def go() -> Ack:
        try:
            # A clean session: a one-shot sender must not leave a persistent session behind that
            # would keep queueing the user's messages.
            async with MqimClient(
                host=connect_host(config, host),
                port=port if port is not None else config.server.port,
                user=as_user,
                password=password,
                client_id=client_id,
                clean_session=True,
                tls_context=tls_context(tls=tls, cafile=cafile),
                ack_timeout=timeout,
                connect_timeout=timeout,
                receive=False,
                max_reconnect_attempts=3,
            ) as client:
                return await client.send(to=to, group=group, text=text, data=structured, id=message_id)
        except ClientError as exc:
            raise _client_error(exc) from exc

    ack = run(go())
    typer.echo(ack.to_json().decode())


def tail_command(
    as_user: AsOpt,
    password: PasswordOpt,
    count: Annotated[
        int | None, typer.Option("--count", "-n", help="Stop after N messages.", min=1, show_default=False)
    ] = None,
    clean: Annotated[bool, typer.Option("--clean", help="Start a clean session (no offline queue).")] = False,
    host: HostOpt = None,
    port: PortOpt = None,
    tls: TlsOpt = False,
    cafile: CaFileOpt = None,
    client_id: Annotated[
        str | None,
        typer.Option("--client-id", help="MQTT client id  [default: <user>-tail]", show_default=False),
    ] = None,
    config_path: ConfigOpt = None,
) -> None:
    """Print incoming messages as JSON lines until Ctrl-C (or --count N).

    The default session is persistent, so what arrived while no tail was running comes first.
    """
    config = get_config(config_path)

    async def go() -> None:
        try:
            async with MqimClient(
                host=connect_host(config, host),
                port=port if port is not None else config.server.port,
                user=as_user,
                password=password,
                client_id=client_id if client_id is not None else f"{as_user}-tail",
                clean_session=clean,
                tls_context=tls_context(tls=tls, cafile=cafile),
            ) as client:
                seen = 0
                async with aclosing(client.messages()) as stream:
                    async for incoming in stream:
                        typer.echo(json.dumps(incoming.to_dict(), separators=(",", ":")))
                        seen += 1
                        if count is not None and seen >= count:
                            return
        except ClientError as exc:
            raise _client_error(exc) from exc

    try:
        run(go())
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
