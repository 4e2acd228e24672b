"""The typer options several commands share, each declared once (name, help text, default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# -- configuration and data -------------------------------------------------------------------
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="MQIM_CONFIG",
        help="TOML configuration file (env MQIM_CONFIG). Values: defaults < file < env MQIM_* < flags.",
        dir_okay=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory holding mqim.db  [default: ./mqim-data or config]"),
]
LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="Log lines as text or json (one JSON object per line)  [default: log.format, text]",
        show_default=False,
    ),
]

# -- a server's listener (`mqim serve`, `mqim broker`) ------------------------------------------
ListenHostOpt = Annotated[
    str | None, typer.Option("--host", help="Address to listen on  [default: 127.0.0.1 or config]")
]
ListenPortOpt = Annotated[
    int | None, typer.Option("--port", help="MQTT TCP port  [default: 1883 or config]", min=0, max=65535)
]

# -- a client's broker (`mqim send`, `mqim tail`) ----------------------------------------------
HostOpt = Annotated[str | None, typer.Option("--host", help="Broker host  [default: 127.0.0.1 or config]")]
PortOpt = Annotated[
    int | None, typer.Option("--port", help="Broker port  [default: 1883 or config]", min=0, max=65535)
]

# -- cluster mode: MongoDB storage and Redis ---------------------------------------------------
MongoOpt = Annotated[
    str | None,
    typer.Option(
        "--mongo",
        envvar="MQIM_MONGO_URL",
        help="Cluster mode: the cluster's MongoDB URL, used instead of <data-dir>/mqim.db "
        "(env MQIM_MONGO_URL)  [default: cluster.mongo_url]",
        show_default=False,
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option("--database", help="MongoDB database (cluster mode)  [default: cluster.database, mqim]"),
]

REDIS_ENV = "MQIM_REDIS_URL"
"""The environment variable of `--redis` (`mqim broker`, `mqim cluster status`)."""

RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar=REDIS_ENV,
        help="Redis URL of the cluster (env MQIM_REDIS_URL)  [default: cluster.redis_url]",
        show_default=False,
    ),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--prefix", help="Redis key prefix shared by the cluster's nodes  [default: cluster.prefix, mqim]"
    ),
]

# -- output and confirmation -------------------------------------------------------------------
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JsonLinesOpt = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
