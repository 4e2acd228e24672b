"""A real Mosquitto broker for the bridge tests: generated config, free loopback port, own process."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def mosquitto_available() -> bool:
    return os.access(MOSQUITTO, os.X_OK)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One Mosquitto process on 127.0.0.1:`port`, configured by `extra` (appended to the config).

    With `persistence`, its state (sessions, queued and retained messages) survives a restart.
    """

    def __init__(self, *, workdir: Path, port: int, extra: str = "", persistence: bool = False) -> None:
        self.workdir = workdir
        self.port = port
        self.extra = extra
        self.persistence = persistence
        self.proc: asyncio.subprocess.Process | None = None
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        workdir.mkdir(parents=True, exist_ok=True)

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # Run as whoever runs the tests (as root Mosquitto would otherwise switch users).
            f"user {getpass.getuser()}",
            "log_dest stdout",
            "log_type all",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.workdir}/"]
        return "\n".join(lines) + "\n" + self.extra

    async def start(self) -> None:
        assert self.proc is None, "already running"
        self.conf.write_text(self.config_text())
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                MOSQUITTO, "-c", str(self.conf), stdout=log, stderr=subprocess.STDOUT
            )
        for _ in range(200):
            if self.proc.returncode is not None:
                raise AssertionError(f"mosquitto exited with {self.proc.returncode}:\n{self.log_text()}")
            if await asyncio.to_thread(_port_open, self.port):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port}:\n{self.log_text()}")

    async def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
