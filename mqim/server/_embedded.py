"""The single-process server: broker + in-process logic + SQLite, as `mqim serve` runs it.

Also what the tests and the benchmark start in-process on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from mqim.acl import AclEngine, MembershipIndex, Rule
from mqim.admin import AdminOptions, Observability, ObservabilityOptions, node_parts
from mqim.auth import AuthOptions
from mqim.bridge import BridgeService, committer_barrier
from mqim.broker import BrokerSettings, Listener, MqimBroker
from mqim.hooks import HooksConfig, HookService
from mqim.logic import (
    LogicLimits,
    LogicService,
)
from mqim.server._compose import (
    attach_im_features,
    make_broker,
    run_im_tasks,
    start_embedded_logic,
    start_im_features,
)
from mqim.server._follower import STAMP_NAME, MembershipFollower, load_membership
from mqim.server._presence import PresenceTracker
from mqim.server._receipts import DeliveryReceipts
from mqim.storage import SqliteSessionStore, SqliteStorage
from mqim.web import HttpServer, WebOptions

log = logging.getLogger("mqim.server")


class EmbeddedServer:
    """Broker, logic service and storage in one process. Use as an async context manager.

    Args:
        data_dir: Where `mqim.db` (messages, users) and `sessions.db` (MQTT sessions) live.
        listeners: Sockets to open; defaults to TCP 127.0.0.1:1883.
        settings: Broker limits.
        logic_limits: Logic service limits.
        embedded_logic: Run the logic service in-process (False when `mqim logic` workers do it).
        allow_anonymous: Accept CONNECT without credentials (granted nothing by the default ACL).
        rules: Extra ACL rules, evaluated before the rules stored with `mqim acl` and the
            built-in v1 rules.
        auth: Authentication methods and their options (token keys in the data directory).
        web: Serve the web chat client over HTTP; it starts only beside a WebSocket listener,
            which the page connects to.
        admin: Serve `/metrics`, `/healthz`, `/readyz` and `/status` (None: no admin listener).
        sys_interval_s: Seconds between `$SYS/broker/...` publications; 0 publishes none.
        hooks: Webhooks (`[hooks]`); None or no endpoint turns them off.
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
        auth: AuthOptions | None = None,
        web: WebOptions | None = None,
        admin: AdminOptions | None = None,
        sys_interval_s: float = 0.0,
        hooks: HooksConfig | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.listeners = list(listeners) if listeners else [Listener(name="default")]
        self.settings = settings or BrokerSettings()
        self.logic_limits = logic_limits or LogicLimits()
        self.embedded_logic = embedded_logic
        self.allow_anonymous = allow_anonymous
        self.auth = auth or AuthOptions()
        self.membership = MembershipIndex()
        self.acl = AclEngine(rules=rules, membership=self.membership)
        self.storage = SqliteStorage(path=data_dir / "mqim.db")
        self.session_store = SqliteSessionStore(path=data_dir / "sessions.db")
        self.broker: MqimBroker | None = None
        self.logic: LogicService | None = None
        self.bridges: BridgeService | None = None
        self.presence: PresenceTracker | None = None
        self.receipts: DeliveryReceipts | None = None
        self.follower: MembershipFollower | None = None
        self.observability_options = ObservabilityOptions(admin=admin, sys_interval_s=sys_interval_s, web=web)
        self.observability: Observability | None = None
        self.web: HttpServer | None = None
        self.hooks_config = hooks
        self.hooks: HookService | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        try:
            await stack.enter_async_context(self.storage)
            # Memberships before the listeners open: a connecting user is subscribed to its groups.
            await load_membership(self.storage, self.membership)
            self.broker = await make_broker(
                listeners=self.listeners,
                settings=self.settings,
                storage=self.storage,
                session_store=self.session_store,
                acl=self.acl,
                auth=self.auth,
                data_dir=self.data_dir,
                allow_anonymous=self.allow_anonymous,
                membership=self.membership,
            )
            await self._start_features(stack, self.broker)
            if self.hooks_config is not None and self.hooks_config.endpoints and self.presence is not None:
                # Before the logic starts: every message it stores is seen by the trigger.
                self.hooks = await stack.enter_async_context(
                    HookService(
                        config=self.hooks_config,
                        data_dir=self.data_dir,
                        port=self.broker,
                        online=self.presence,
                        members=self.membership,
                    )
                )
            if self.embedded_logic:
                tasks = await stack.enter_async_context(asyncio.TaskGroup())
                self.logic = await start_embedded_logic(
                    stack,
                    tasks,
                    broker=self.broker,
                    storage=self.storage,
                    limits=self.logic_limits,
                    membership=self.membership,
                    name="mqim-logic",
                )
            broker = self.broker
            # Outbound bridges, IM mappings and command routes of <data_dir>/bridges.json; closed
            # first, so they stop before the logic service drains.
            self.bridges = await stack.enter_async_context(
                BridgeService(
                    data_dir=self.data_dir,
                    port=broker,
                    barrier=committer_barrier(broker.hub.committer),
                    inbound_status=lambda: broker.bridge_status,
                    metrics=broker.hub.counters.extra,
                )
            )
            # Last in, first out: the page, the admin endpoints and $SYS stop before the rest.
            ws = next((spec for spec in self.listeners if spec.kind == "ws"), None)
            self.observability = await stack.enter_async_context(
                Observability(
                    options=self.observability_options,
                    parts=node_parts(
                        broker=broker,
                        storage=self.storage,
                        storage_kind="sqlite",
                        logic=self.logic,
                        bridges=self.bridges,
                        data_dir=str(self.data_dir),
                    ),
                    broker=broker,
                    ws_port=broker.port(ws.name) if ws is not None else None,
                )
            )
            self.web = self.observability.web
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start_features(self, stack: contextlib.AsyncExitStack, broker: MqimBroker) -> None:
        """Start the broker with group subscriptions, presence, receipts and the membership follower.

        The shared `membership` index drives the server-managed `g/{group}/#` subscriptions; an
        embedded logic service keeps it current, otherwise the follower does (group events of
        `mqim logic` workers, `mqim group` commands through the stamp file).
        """
        hub = broker.hub
        features = attach_im_features(stack, hub=hub, storage=self.storage, membership=self.membership)
        self.presence, self.receipts = features.presence, features.receipts
        await stack.enter_async_context(broker)
        # Restored persistent sessions follow memberships changed while the broker was down.
        hub.refresh_managed({s.user for s in list(hub.sessions.values()) if s.user})
        follower = self.follower = MembershipFollower(
            storage=self.storage,
            index=self.membership,
            stamp=self.data_dir / STAMP_NAME,
            port=None if self.embedded_logic else broker,
        )
        await start_im_features(stack, features, follower)
        await run_im_tasks(stack, features, follower)

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener."""
        assert self.broker is not None, "server not started"
        return self.broker.port(listener)

    async def disable_user(self, user: str) -> int:
        """Disable an account and close its connections at once; returns how many were closed.

        Raises:
            mqim.storage.NotFound: No such account.
        """
        assert self.broker is not None, "server not started"
        await self.storage.set_disabled(user, True)
        return self.broker.block_user(user)

    async def reload_membership(self) -> None:
        """Apply group changes written to storage directly (not through the service) now.

        `mqim group` does it by touching the stamp file, which the server polls every second.
        """
        assert self.follower is not None, "server not started"
        await self.follower.reload_all()

    async def reload_policy(self) -> None:
        """Apply rule, role and account changes made in storage now, without waiting for the poll."""
        assert self.broker is not None, "server not started"
        await self.broker.reload_policy()
