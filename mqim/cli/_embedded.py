"""The single-process server: broker + in-process logic + SQLite, as `mqim serve` runs it.

Also what the tests and the benchmark start in-process on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from mqim.acl import AclEngine, Identity, MembershipIndex, Rule
from mqim.broker import BrokerSettings, Listener, MqimBroker, StorageAuthenticator
from mqim.logic import InProcessBus, LogicLimits, LogicService
from mqim.protocol import inbox_filter
from mqim.storage import SqliteSessionStore, SqliteStorage

log = logging.getLogger("mqim.server")


def default_auto_subscriptions(identity: Identity) -> Iterable[tuple[str, int]]:
    """A user's session is subscribed to its own inbox (DESIGN.md section 4)."""
    if identity.kind == "user" and identity.user:
        return [(inbox_filter(identity.user), 1)]
    return []


async def _drain(bus: InProcessBus, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if bus.pending == 0:
            return
        await asyncio.sleep(0.01)
    log.warning("stopping with %d unprocessed requests", bus.pending)


class EmbeddedServer:
    """Broker, logic service and storage in one process. Use as an async context manager.

    Args:
        data_dir: Where `mqim.db` (messages, users) and `sessions.db` (MQTT sessions) live.
        listeners: Sockets to open; defaults to TCP 127.0.0.1:1883.
        settings: Broker limits.
        logic_limits: Logic service limits.
        embedded_logic: Run the logic service in-process (False when `mqim logic` workers do it).
        allow_anonymous: Accept CONNECT without credentials (granted nothing by the default ACL).
        rules: Extra ACL rules, evaluated before the built-in v1 rules.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        listeners: Sequence[Listener] | None = None,
        settings: BrokerSettings | None = None,
        logic_limits: LogicLimits | None = None,
        embedded_logic: bool = True,
        allow_anonymous: bool = False,
        rules: Sequence[Rule] = (),
    ) -> None:
        self.data_dir = data_dir
        self.listeners = list(listeners) if listeners else [Listener(name="default")]
        self.settings = settings or BrokerSettings()
        self.logic_limits = logic_limits or LogicLimits()
        self.embedded_logic = embedded_logic
        self.allow_anonymous = allow_anonymous
        self.membership = MembershipIndex()
        self.acl = AclEngine(rules=rules, membership=self.membership)
        self.storage = SqliteStorage(path=data_dir / "mqim.db")
        self.session_store = SqliteSessionStore(path=data_dir / "sessions.db")
        self.broker: MqimBroker | None = None
        self.logic: LogicService | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        try:
            await stack.enter_async_context(self.storage)
            self.broker = MqimBroker(
                listeners=self.listeners,
                settings=self.settings,
                authenticator=StorageAuthenticator(
                    storage=self.storage, allow_anonymous=self.allow_anonymous
                ),
                acl=self.acl,
                session_store=self.session_store,
                auto_subscriptions=default_auto_subscriptions,
            )
            await stack.enter_async_context(self.broker)
            if self.embedded_logic:
                bus = InProcessBus(port=self.broker)
                self.logic = LogicService(storage=self.storage, bus=bus, limits=self.logic_limits)
                bus.on_overflow = self.logic.reject_overflow
                await stack.enter_async_context(bus)
                tasks = await stack.enter_async_context(asyncio.TaskGroup())
                service_task = tasks.create_task(self.logic.run(), name="mqim-logic")
                stack.callback(service_task.cancel)
                # Runs before the cancel above: requests already acknowledged at the MQTT level
                # are processed before the service stops (bounded wait).
                stack.push_async_callback(_drain, bus)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener."""
        assert self.broker is not None, "server not started"
        return self.broker.port(listener)
