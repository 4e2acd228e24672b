"""`mqim broker` as its own process (so a test can SIGKILL, SIGSTOP or SIGCONT it).

Started and awaited without blocking the event loop: the in-process nodes of the same test must
keep renewing their heartbeats meanwhile (a blocked loop fences them, see `cluster/_fence.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.cluster.conftest import HEARTBEAT_S, NODE_TTL_S, Cluster
from tests.conftest import free_port

START_TIMEOUT_S = 30.0


@dataclass
class NodeProcess:
    """A running node process."""

    node_id: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=15)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def _spawn(argv: list[str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@contextlib.asynccontextmanager
async def node_process(cluster: Cluster, node_id: str, tmp_path: Path) -> AsyncIterator[NodeProcess]:
    """Start `mqim broker --node-id node_id` on a free port; kill it at exit."""
    port = free_port()
    argv = [
        sys.executable, "-m", "mqim.cli", "broker",
        "--node-id", node_id,
        "--redis", cluster.redis.url,
        "--mongo", cluster.mongo.url,
        "--database", cluster.database,
        "--port", str(port),
        "--data-dir", str(tmp_path / node_id),
        "--heartbeat", str(HEARTBEAT_S),
        "--node-ttl", str(NODE_TTL_S),
    ]  # fmt: skip
    log_path = tmp_path / f"{node_id}.log"
    proc = await asyncio.to_thread(_spawn, argv, tmp_path, log_path)
    node = NodeProcess(node_id=node_id, proc=proc, port=port, log_path=log_path)
    try:
        for _ in range(int(START_TIMEOUT_S / 0.1)):
            assert proc.poll() is None, node.log_tail()
            if await asyncio.to_thread(_port_open, port):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"node {node_id} did not start:\n{node.log_tail()}")
        yield node
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        await asyncio.to_thread(proc.wait, 15)
