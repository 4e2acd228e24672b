"""Real Redis and MongoDB-wire (SecantusDB) server processes on free loopback ports, for tests.

    with redis_server() as redis:              # throw-away, no persistence
        url = redis.url
    with redis_server(data_dir=tmp_path) as redis:   # appendonly + fsync always, survives restart
        redis.restart()
    with mongo_server() as mongo:              # SecantusDB, data in a temp dir
        MongoStorage(url=mongo.url, database="t1")

Fixtures `redis_proc` (one server per test) and `mongo_proc` (one per session: SecantusDB takes
about a second to start and two to stop) are defined here; a conftest imports them.

SecantusDB (GPL-2.0) is a test-only dependency, started as a separate process; mqim never imports
it. Each start waits for the server to answer (bounded), stop sends SIGTERM then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest

from tests.conftest import free_port

START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0
# A free port can be taken by someone else before the server binds it: try a few.
START_ATTEMPTS: Final = 3


class ServerError(RuntimeError):
    """A test server could not be started."""


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _mongo_hello(port: int) -> bool:
    # Deferred import: only the mongo fixture needs pymongo's sync client.
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            pass
    except OSError:
        return False
    client: MongoClient[dict[str, object]] = MongoClient(
        f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=2000
    )
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


class ServerProcess:
    """One server process; `start()`, `stop()`, `kill()`, `restart()` on the same port."""

    def __init__(
        self,
        *,
        name: str,
        argv: Callable[[int], list[str]],
        ready: Callable[[int], bool],
        workdir: Path,
        port: int | None = None,
    ) -> None:
        self.name = name
        self._argv = argv
        self._ready = ready
        self.workdir = workdir
        self._fixed_port = port
        self.port = port or 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / f"{name}.log"

    @property
    def pid(self) -> int | None:
        """The running process id, or None."""
        return None if self._proc is None else self._proc.pid

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output (for failure messages)."""
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and wait until it answers; on a taken port, try another one."""
        if self._proc is not None:
            raise ServerError(f"{self.name} is already running")
        for attempt in range(1, START_ATTEMPTS + 1):
            port = self._fixed_port or self.port or free_port()
            if self._try_start(port):
                self.port = port
                # A restart must come back on the same port: clients keep their URL.
                self._fixed_port = port
                return
            if self._fixed_port is not None or attempt == START_ATTEMPTS:
                break
            self.port = 0
        raise ServerError(f"{self.name} did not start on 127.0.0.1:{port}:\n{self.log_tail()}")

    def _try_start(self, port: int) -> bool:
        with self._log.open("ab") as log:
            proc = subprocess.Popen(
                self._argv(port),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._proc = proc
        deadline = time.monotonic() + START_TIMEOUT_S
        delay = 0.02
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                return False
            if self._ready(port):
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
        self._terminate(proc)
        self._proc = None
        return False

    def _terminate(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after a bounded wait)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash: nothing is flushed)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(ServerProcess):
    """A redis-server process."""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"


class MongoServer(ServerProcess):
    """A SecantusDB process speaking the MongoDB wire protocol."""

    @property
    def url(self) -> str:
        """``mongodb://127.0.0.1:PORT/?directConnection=true``."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"


def _redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        raise ServerError("redis-server is not installed: run scripts/install-services (make test does)")
    return found


@contextlib.contextmanager
def _workdir(data_dir: Path | None, prefix: str) -> Iterator[Path]:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield data_dir
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def redis_server(*, data_dir: Path | None = None, port: int | None = None) -> Iterator[RedisServer]:
    """A running redis-server on loopback.

    Args:
        data_dir: With a directory, Redis keeps an append-only file there with ``appendfsync
            always``, so everything acknowledged survives `restart()` and `kill()`. Without, no
            persistence at all (a throw-away server in a temp dir).
        port: A fixed port; default a free one.
    """
    binary = _redis_binary()
    with _workdir(data_dir, "mqim-redis-") as workdir:
        durable = data_dir is not None

        def argv(p: int) -> list[str]:
            args = [binary, "--port", str(p), "--bind", "127.0.0.1", "--dir", str(workdir)]
            args += ["--save", "", "--daemonize", "no", "--logfile", ""]
            if durable:
                args += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                args += ["--appendonly", "no"]
            return args

        server = RedisServer(name="redis", argv=argv, ready=_redis_ping, workdir=workdir, port=port)
        with server:
            yield server


@contextlib.contextmanager
def mongo_server(
    *, data_dir: Path | None = None, port: int | None = None, sync_on_commit: bool = False
) -> Iterator[MongoServer]:
    """A running SecantusDB (MongoDB wire protocol) on loopback.

    Started as ``python -m secantus --host 127.0.0.1 --port N --storage-path DIR --config EMPTY``
    (the empty config file stops it from reading a ``secantusd.toml`` of the machine).

    Args:
        data_dir: Where the data lives (kept across `restart()`); default a temp dir.
        port: A fixed port; default a free one.
        sync_on_commit: Fsync every commit (``--sync-on-commit``), so acknowledged writes survive
            `kill()`; without it the last writes before a SIGKILL may be lost (as with mongod's
            default ``j: false``).
    """
    with _workdir(data_dir, "mqim-secantus-") as workdir:
        config = workdir / "secantusd.toml"
        config.touch()

        def argv(p: int) -> list[str]:
            return [
                sys.executable,
                "-m",
                "secantus",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(p),
                "--storage-path",
                str(workdir / "data"),
                "--log-level",
                "WARNING",
                *(["--sync-on-commit"] if sync_on_commit else []),
            ]

        server = MongoServer(name="secantus", argv=argv, ready=_mongo_hello, workdir=workdir, port=port)
        with server:
            yield server


@pytest.fixture
def redis_proc() -> Iterator[RedisServer]:
    """A throw-away redis-server for one test."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def mongo_proc() -> Iterator[MongoServer]:
    """One SecantusDB server for the session; tests isolate themselves by database name."""
    with mongo_server() as server:
        yield server
