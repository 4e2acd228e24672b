"""`mqim bench`: load generator with stock amqtt and Mosquitto baselines in the same run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def bench_command(
    scenario: Annotated[
        str,
        typer.Argument(help="p2p | standalone | group | p2p-crowd | idle | cluster | all, or a comma list"),
    ] = "all",
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target", help="mqim | amqtt | mosquitto | all | mqtt://user:pw@host:port (repeatable)"
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write every figure to this JSON file.")
    ] = None,
    duration: Annotated[float, typer.Option("--duration", help="Seconds per measured phase.", min=0.5)] = 5.0,
    rate: Annotated[
        int | None, typer.Option("--rate", help="Open-loop rate in msg/s for latency figures.", min=1)
    ] = None,
    crowd: Annotated[
        int, typer.Option("--crowd", help="Other connected users in p2p-crowd.", min=0)
    ] = 10_000,
    group_size: Annotated[
        int, typer.Option("--group-size", help="Members in the group scenario.", min=1)
    ] = 1_000,
    idle: Annotated[int, typer.Option("--idle", help="Connections in the idle scenario.", min=1)] = 10_000,
    logic_workers: Annotated[
        int,
        typer.Option(
            "--logic-workers", help="mqim logic processes in standalone (more than one: --shared).", min=1
        ),
    ] = 1,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="A saved --json report: print the change of each figure since it."),
    ] = None,
) -> None:
    """Measure mqim beside stock amqtt and Mosquitto, each started on free loopback ports."""
    from mqim.bench import BenchError, compare_with, format_report, run

    targets = target or ["all"]
    if "all" in targets:
        targets = ["mqim", "amqtt", "mosquitto"]
    try:
        report = run(
            scenario,
            targets=targets,
            json_path=json_path,
            duration_s=duration,
            rate=rate,
            progress=lambda line: typer.echo(line, err=True),
            crowd_size=crowd,
            group_size=group_size,
            idle_size=idle,
            logic_workers=logic_workers,
        )
    except BenchError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(format_report(report))
    if compare is not None:
        try:
            typer.echo(compare_with(report, compare))
        except BenchError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
