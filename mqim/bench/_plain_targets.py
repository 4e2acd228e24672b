"""The plain relays: Mosquitto and stock amqtt started by the harness, or a running broker by URL.

* ``mosquitto``: Debian's ``/usr/sbin/mosquitto`` with a generated config.
* ``amqtt``: stock amqtt 0.12.1 (`mqim.bench._amqtt_target`) in the harness's own venv.
* ``mqtt://[user[:password]@]host[:port]``: a running broker, used as a plain topic relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mqim.bench._adapters import AdapterSpec
from mqim.bench._exceptions import TargetError, UnknownTarget
from mqim.bench._host import LOOPBACK
from mqim.bench._target import ProcessTarget, Target

MOSQUITTO_MAX_QUEUED = 1_000_000
"""Mosquitto's per-client queue (its default, 1,000, would drop messages of a slow subscriber)."""


class MosquittoTarget(ProcessTarget):
    """Mosquitto with a generated config: loopback listener, anonymous, no persistence."""

    name = "mosquitto"

    def __init__(self, *, executable: str | None = None) -> None:
        super().__init__()
        self.executable = executable or shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def command(self, workdir: Path, port: int) -> list[str]:
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {LOOPBACK}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"max_queued_messages {MOSQUITTO_MAX_QUEUED}\n"
            # asyncio (amqtt, mqim) disables Nagle on every connection; so does this, for parity.
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "connection_messages false\n"
        )
        return [self.executable, "-c", str(conf)]


class AmqttTarget(ProcessTarget):
    """Stock amqtt 0.12.1 in a subprocess of the same venv."""

    name = "amqtt"

    def command(self, workdir: Path, port: int) -> list[str]:
        return [sys.executable, "-m", "mqim.bench._amqtt_target", "--host", LOOPBACK, "--port", str(port)]


class ExternalTarget(Target):
    """A running broker reached by URL, used as a plain topic relay; never started or stopped."""

    restartable = False

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise UnknownTarget(f"not a target name or mqtt://[user[:password]@]host[:port] URL: {url!r}")
        try:
            port = parts.port or 1883
        except ValueError as exc:
            raise UnknownTarget(f"bad port in {url!r}") from exc
        self.host = parts.hostname
        self.port = port
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.name = f"ext:{self.host}:{self.port}"

    async def start(self, workdir: Path) -> None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 5.0)
        except (OSError, TimeoutError) as exc:
            raise TargetError(f"cannot reach {self.host}:{self.port}: {exc}") from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def stop(self) -> None:
        return None

    async def restart(self, workdir: Path) -> None:
        return None

    def adapter_spec(self, run: str) -> AdapterSpec:
        return AdapterSpec(kind="plain", run=run, username=self.username, password=self.password)
