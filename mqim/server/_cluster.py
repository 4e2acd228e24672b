"""One cluster node: broker + optional embedded logic + MongoDB storage + Redis sessions + link.

What `mqim broker --node-id ID --redis URL --mongo URL` runs, and what the cluster tests start
(three of them in one process on loopback). Messages, accounts and groups live in MongoDB;
sessions, queues and retained messages in Redis (`RedisSessionStore`), so a persistent client
may return to any node; the `ClusterLink` joins the node to the others (DESIGN.md section 6).
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
from mqim.broker import BrokerSettings, Listener, MqimBroker
from mqim.cluster import ClusterKeys, ClusterLink, ClusterSettings
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
from mqim.server._follower import CONTACT_EVENTS, GROUP_EVENTS, MembershipFollower, load_membership
from mqim.server._stamps import redis_stamp_source
from mqim.storage import MongoStorage, RedisSessionStore

log = logging.getLogger("mqim.cluster")

_DRAIN_S = 5.0


class ClusterServer:
    """A cluster node in one process. Use as an async context manager.

    Args:
        node_id: This node's id, unique in the cluster.
        redis_url: Redis of the cluster (registry, routes, streams, sessions).
        mongo_url: MongoDB of the cluster (messages, accounts, groups, ACL rules).
        database: MongoDB database name.
        data_dir: Local files (token keys).
        listeners: Sockets to open; defaults to TCP 127.0.0.1:1883.
        settings: Broker limits.
        cluster: Cluster timing and bounds; `node_id` is taken from the argument.
        logic_limits: Logic service limits.
        embedded_logic: Run the logic service in this process (False: `mqim logic` workers,
            which subscribe with `$share/logic/...`).
        allow_anonymous: Accept CONNECT without credentials.
        rules: Extra ACL rules.
        auth: Authentication options.
        admin: Serve `/metrics`, `/healthz`, `/readyz` and `/status` (None: no admin listener).
        sys_interval_s: Seconds between `$SYS/broker/...` publications; 0 publishes none.
    """

    def __init__(
        self,
        *,
        node_id: str,
        redis_url: str,
        mongo_url: str,
        database: str = "mqim",
        data_dir: Path,
        listeners: Sequence[Listener] | None = None,
        settings: BrokerSettings | None = None,
        cluster: ClusterSettings | None = None,
        logic_limits: LogicLimits | None = None,
        embedded_logic: bool = True,
        allow_anonymous: bool = False,
        rules: Sequence[Rule] = (),
        auth: AuthOptions | None = None,
        admin: AdminOptions | None = None,
        sys_interval_s: float = 0.0,
    ) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.listeners = list(listeners) if listeners else [Listener(name="default")]
        self.settings = settings or BrokerSettings()
        base = cluster or ClusterSettings(node_id=node_id)
        self.cluster_settings = ClusterSettings(
            node_id=node_id,
            prefix=base.prefix,
            heartbeat_s=base.heartbeat_s,
            node_ttl_s=base.node_ttl_s,
            resync_s=base.resync_s,
            stream_maxlen=base.stream_maxlen,
            max_outbox=base.max_outbox,
            read_batch=base.read_batch,
            kick_timeout_s=base.kick_timeout_s,
            timeout_s=base.timeout_s,
        )
        self.logic_limits = logic_limits or LogicLimits()
        self.embedded_logic = embedded_logic
        self.allow_anonymous = allow_anonymous
        self.auth = auth or AuthOptions()
        self.membership = MembershipIndex()
        self.acl = AclEngine(rules=rules, membership=self.membership)
        self.storage = MongoStorage(url=mongo_url, database=database)
        # Redis applies this node's session writes only while its heartbeat key lives: a node
        # paused past its TTL never overwrites what its adopter wrote (storage/_redis_guard.py).
        self.sessions = RedisSessionStore(
            url=redis_url,
            prefix=self.cluster_settings.prefix,
            guard_key=ClusterKeys(self.cluster_settings.prefix).alive(self.cluster_settings.node_id),
        )
        self.link = ClusterLink(url=redis_url, settings=self.cluster_settings, session_store=self.sessions)
        self.broker: MqimBroker | None = None
        self.logic: LogicService | None = None
        self.observability_options = ObservabilityOptions(admin=admin, sys_interval_s=sys_interval_s)
        self.observability: Observability | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stack = self._stack
        try:
            await stack.enter_async_context(self.storage)
            await load_membership(self.storage, self.membership)
            broker = self.broker = await make_broker(
                listeners=self.listeners,
                settings=self.settings,
                storage=self.storage,
                session_store=self.link.session_store,
                acl=self.acl,
                auth=self.auth,
                data_dir=self.data_dir,
                allow_anonymous=self.allow_anonymous,
                membership=self.membership,
            )
            features = attach_im_features(
                stack, hub=broker.hub, storage=self.storage, membership=self.membership
            )
            self.link.attach(broker)
            # The link outlives the broker: the broker's last commit waits for its writer.
            await stack.enter_async_context(self.link)
            await stack.enter_async_context(broker)
            # Group changes made by the logic on any node, new direct contacts and `mqim group`
            # changes (the Redis stamp) reach every node's membership index.
            follower = MembershipFollower(
                storage=self.storage,
                index=self.membership,
                stamp=None,
                port=broker,
                stamp_source=redis_stamp_source(lambda: self.link.redis, prefix=self.cluster_settings.prefix),
                cluster_contacts=True,
            )
            await start_im_features(stack, features, follower)
            self.link.subscribe_always(GROUP_EVENTS)
            self.link.subscribe_always(CONTACT_EVENTS)
            await stack.enter_async_context(self.link.running())
            tasks = await run_im_tasks(stack, features, follower, suffix=f":{self.node_id}")
            if self.embedded_logic:
                await self._start_logic(stack, broker, tasks)
            self.observability = await stack.enter_async_context(
                Observability(
                    options=self.observability_options,
                    parts=node_parts(
                        broker=broker,
                        storage=self.storage,
                        storage_kind="mongodb",
                        logic=self.logic,
                        cluster=self.link,
                        data_dir=str(self.data_dir),
                    ),
                    broker=broker,
                    cluster_prefix=self.cluster_settings.prefix,
                    name=self.node_id,
                )
            )
        except BaseException:
            await stack.aclose()
            raise
        logic = "embedded" if self.embedded_logic else "external"
        log.info("cluster node %r started (logic %s)", self.node_id, logic)
        return self

    async def _start_logic(
        self, stack: contextlib.AsyncExitStack, broker: MqimBroker, tasks: asyncio.TaskGroup
    ) -> None:
        self.logic = await start_embedded_logic(
            stack,
            tasks,
            broker=broker,
            storage=self.storage,
            limits=self.logic_limits,
            membership=self.membership,
            name=f"mqim-logic:{self.node_id}",
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener."""
        assert self.broker is not None, "server not started"
        return self.broker.port(listener)
