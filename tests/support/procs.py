"""Real `mqim` processes for tests that kill them (`kill -9`) or run them apart (`mqim logic`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path


async def wait_for_port(proc: asyncio.subprocess.Process, port: int, *, timeout: float = 30.0) -> None:
    """Wait until something accepts on `port` (the process must stay alive meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.returncode is None, "the mqim process exited; see its log"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}; see the process log"
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def start_mqim(*args: str, log: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start `python -m mqim.cli ARGS...` with its output appended to `log`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mqim.cli", *args, stdout=out, stderr=out, env=full_env
        )


async def start_serve(
    port: int, data: Path, log: Path, *, config: Path | None = None
) -> asyncio.subprocess.Process:
    """`mqim serve` on `port` with `data`, once it accepts connections."""
    args = ["serve", "--port", str(port), "--data-dir", str(data)]
    if config is not None:
        args += ["--config", str(config)]
    proc = await start_mqim(*args, log=log)
    await wait_for_port(proc, port)
    return proc


async def kill(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Send `sig` (SIGKILL by default) and reap the process."""
    if proc.returncode is None:
        proc.send_signal(sig)
    async with asyncio.timeout(30):
        await proc.wait()
