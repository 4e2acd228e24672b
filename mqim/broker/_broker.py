"""`MqimBroker`: amqtt's `Broker` with mqim's connection handling, routing and durable sessions.

From amqtt we keep the listener set-up (`_start_listeners`: TCP/WS, TLS contexts, bind parsing),
its configuration model and its plugin manager (authentication plugins at CONNECT). We replace
the per-connection protocol handler and the broadcast loop, where amqtt's defects live (see
docs/architecture.md, "Departures from DESIGN.md"), with `MqttConnection` + `Hub`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self

from amqtt.broker import Broker
from amqtt.contexts import ListenerType

from mqim._util import worth_logging
from mqim.acl import AclEngine, Identity, IdentityKind
from mqim.auth import Authenticator
from mqim.broker._admission import Admission
from mqim.broker._connection import MqttConnection
from mqim.broker._counting import count_event
from mqim.broker._exceptions import ConfigError
from mqim.broker._host import ConnectionHost
from mqim.broker._hub import ConsumerCallback, Hub
from mqim.broker._listener import Listener, open_server
from mqim.broker._live_policy import LivePolicy
from mqim.broker._notices import BridgeStatus, bridge_notice_name
from mqim.broker._plugins import ask_auth_plugins
from mqim.broker._ports import MembershipView
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._tell import tell_error
from mqim.broker._timers import ConnectionTimers
from mqim.broker._wills import publish_will
from mqim.mqtt import Connect, Publish
from mqim.protocol import ErrorCode
from mqim.storage import SessionStore, Storage

log = logging.getLogger("mqim.broker")

_SWEEP_INTERVAL_S = 0.5


class MqimBroker(Broker):  # type: ignore[misc]
    """The mqim MQTT broker. Use as an async context manager.

    Args:
        listeners: Sockets to listen on (at least one).
        settings: Limits.
        authenticator: Decides who connects.
        acl: Decides what each identity may publish, subscribe and receive.
        session_store: Durable sessions and retained messages; None keeps them in memory.
        auto_subscriptions: Server-managed subscriptions for an identity (docs/architecture.md,
            "IM features").
        plugins: Extra amqtt plugins (dotted path -> options), loaded beside mqim's auth plugin.
        storage: Where ACL rules, roles and accounts live. With it the broker loads the stored
            rules and roles at start and polls for changes every `policy_poll_interval_s`
            (see `reload_policy`); None keeps only the rules `acl` was built with.
        membership: The groups of each user, for the server-managed group subscriptions.
        restored_kinds: Kinds of the non-user accounts by id, for restored sessions.
    """

    def __init__(
        self,
        *,
        listeners: Sequence[Listener],
        settings: BrokerSettings,
        authenticator: Authenticator,
        acl: AclEngine,
        session_store: SessionStore | None,
        auto_subscriptions: Callable[[Identity], Iterable[tuple[str, int]]] | None = None,
        plugins: dict[str, dict[str, Any]] | None = None,
        storage: Storage | None = None,
        membership: MembershipView | None = None,
        restored_kinds: Mapping[str, IdentityKind] | None = None,
    ) -> None:
        if not listeners:
            raise ConfigError("at least one listener is required")
        self.settings = settings
        self.authenticator = authenticator
        self.session_store = session_store
        self.hub = Hub(
            settings=settings,
            acl=acl,
            store=session_store,
            auto_subscriptions=auto_subscriptions,
            membership=membership,
            restored_kinds=restored_kinds,
        )
        self._listener_specs = {spec.name: spec for spec in listeners}
        self._connections: set[MqttConnection] = set()
        self.timers = ConnectionTimers(settings=self.settings)
        self._per_listener: dict[str, int] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self.bridges = BridgeStatus()
        self.bridge_status = self.bridges.status
        self.storage = storage
        self.admission = Admission(settings=settings, hub=self.hub)
        self.policy = LivePolicy(
            storage=storage,
            hub=self.hub,
            admission=self.admission,
            authenticator=authenticator,
            settings=settings,
        )
        listener_cfg: dict[str, Any] = {}
        for index, spec in enumerate(listeners):
            name = "default" if index == 0 else spec.name
            cfg: dict[str, Any] = {
                "type": spec.kind,
                "bind": f"{spec.host}:{spec.port}",
                "max_connections": spec.max_connections,
            }
            if spec.certfile is not None:
                cfg.update(ssl=True, certfile=str(spec.certfile), keyfile=str(spec.keyfile))
                if spec.cafile is not None:
                    cfg["cafile"] = str(spec.cafile)
            listener_cfg[name] = cfg
        self._names = {("default" if i == 0 else s.name): s.name for i, s in enumerate(listeners)}
        all_plugins = {"mqim.broker._plugins.MqimAuthPlugin": {}, **(plugins or {})}
        try:
            super().__init__({"listeners": listener_cfg, "plugins": all_plugins})
        except (ValueError, TypeError, FileNotFoundError) as exc:
            raise ConfigError(f"invalid broker configuration: {exc}") from exc

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        try:
            await self.start()
        except BaseException as exc:
            await self._tasks.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.shutdown()
        finally:
            assert self._tasks is not None
            await self._tasks.__aexit__(exc_type, exc, tb)
            self._tasks = None

    async def start(self) -> None:
        """Load durable state, open the listeners and start the background tasks."""
        if self._tasks is None:
            raise ConfigError("use `async with MqimBroker(...)` to run the broker")
        store = self.session_store
        if store is not None:
            await store.open()
            sessions, retained = await store.load()
            self.hub.restore(sessions, retained)
        await self.policy.load()
        self.transitions.start()
        await self._start_listeners()
        self.transitions.starting_success()
        self._background = [
            self._tasks.create_task(self.hub.committer.run(), name="mqim-committer"),
            self._tasks.create_task(self._sweep(), name="mqim-sweeper"),
        ]
        if self.policy.polled:
            self._background.append(self._tasks.create_task(self.policy.watch(), name="mqim-policy"))
        for name, server in self._servers.items():
            log.info("listening on %s (%s)", self._describe(server), self._names.get(name, name))

    async def shutdown(self) -> None:
        """Stop accepting, close every connection, flush durable state, release the store."""
        log.info("shutting down: %d connections", len(self._connections))
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        for conn in list(self._connections):
            conn.close("server shutting down")
        # Give connections a moment to run connection_lost (wills, session saves).
        for _ in range(50):
            if not self._connections:
                break
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn.close("server shutting down", abort=True)
        for server in self._servers.values():
            await server.close_instance()
        # A socket accepted just before the listeners closed gets its protocol a tick later:
        # close those too, so nothing is left open behind a stopped broker.
        await asyncio.sleep(0)
        for conn in list(self._connections):
            conn.close("server shutting down", abort=True)
        for task in self._background:
            task.cancel()
        for task in self._background:
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        self._background = []
        await self.hub.committer.commit()
        self.hub.close()
        if self.session_store is not None:
            await self.session_store.close()
        if self.transitions.state == "started":
            self.transitions.shutdown()
            self.transitions.stopping_success()
        await self.plugins_manager.close()
        log.info("broker stopped")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the broker runs on (amqtt's `Broker` captures it at construction)."""
        loop: asyncio.AbstractEventLoop = self._loop
        return loop

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Run a task owned by the broker (closed with it)."""
        if self._tasks is None:
            coro.close()
            return
        self._tasks.create_task(coro, name=name)

    def port(self, listener: str | None = None) -> int:
        """The bound port of a listener (useful when it was configured as 0)."""
        key = "default"
        if listener is not None:
            key = next((k for k, v in self._names.items() if v == listener), listener)
        instance = self._servers[key].instance
        sockets = list(instance.sockets)
        return int(sockets[0].getsockname()[1])

    @staticmethod
    def _describe(server: Any) -> str:
        try:
            return ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.instance.sockets)
        except (AttributeError, OSError):
            return "?"

    # amqtt override: our own protocol for TCP, our own adapter for WebSocket.
    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        host: ConnectionHost[MqttConnection] = self
        factory: Callable[[], asyncio.Protocol] = partial(MqttConnection, host=host, listener=listener_name)
        return await open_server(
            factory,
            listener_type=listener_type,
            address=address,
            port=port,
            ssl_context=ssl_context,
            spec=self._listener_specs.get(self._names.get(listener_name, listener_name)),
            settings=self.settings,
        )

    # -- connection accounting -----------------------------------------------------------------
    def connection_opened(self, conn: MqttConnection) -> bool:
        """Count a new socket; False when a limit is reached (its CONNECT gets CONNACK 3)."""
        self._connections.add(conn)
        self.timers.opened(conn)
        count = self._per_listener.get(conn.listener, 0) + 1
        self._per_listener[conn.listener] = count
        spec = self._listener_specs.get(self._names.get(conn.listener, conn.listener))
        per_listener_ok = spec is None or spec.max_connections <= 0 or count <= spec.max_connections
        if not (len(self._connections) <= self.settings.max_connections and per_listener_ok):
            return False
        return self.admission.connect_rate_ok(conn)

    def connection_established(self, conn: MqttConnection) -> None:
        """Watch the keepalive of an accepted connection instead of its CONNECT time-out."""
        self.timers.established(conn)

    def connection_closed(self, conn: MqttConnection) -> None:
        """Release the slot of a socket, exactly once."""
        self.timers.closed(conn)
        if conn in self._connections:
            self._connections.remove(conn)
            self._per_listener[conn.listener] -= 1
        self.admission.released(conn)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def connection_stats(self) -> dict[tuple[str, str], int]:
        """Open connections by (listener name, account kind); `none` before authentication."""
        stats: dict[tuple[str, str], int] = {}
        for conn in self._connections:
            identity = conn.identity
            key = (self._names.get(conn.listener, conn.listener), identity.kind if identity else "none")
            stats[key] = stats.get(key, 0) + 1
        return stats

    def listener_ports(self) -> dict[str, tuple[str, str, int]]:
        """(kind, host, bound port) of every listener, by name."""
        return {name: (spec.kind, spec.host, self.port(name)) for name, spec in self._listener_specs.items()}

    # -- security: limits, live policy, kicks (Admission, LivePolicy) -------------------------
    def _count(self, name: str, n: int = 1) -> None:
        count_event(self.hub.counters, name, n)

    def admit_connection(self, conn: MqttConnection, identity: Identity) -> tuple[int, str] | None:
        """Called once authentication succeeded: None admits, else (CONNACK code, reason).

        See `Admission.admit_connection`.
        """
        return self.admission.admit_connection(conn, identity)

    def kick_user(self, user: str, reason: str = "account disabled") -> int:
        """Close every connection of `user` now; returns how many were closed."""
        return self.admission.kick_user(user, reason)

    def block_user(self, user: str, reason: str = "account disabled") -> int:
        """Refuse `user` from now on (until `unblock_user`) and close its connections."""
        return self.admission.block_user(user, reason)

    def unblock_user(self, user: str) -> None:
        """Stop refusing `user` (its account was enabled again)."""
        self.admission.unblock_user(user)

    def user_connections(self, user: str) -> int:
        """The number of admitted connections `user` holds."""
        return self.admission.user_connections(user)

    async def reload_policy(self) -> None:
        """Read rule, role, account and token key changes from storage and apply them now.

        See `LivePolicy.reload` (which raises `InvalidRule` or `StorageError`).
        """
        await self.policy.reload()

    def revoke_denied_subscriptions(self, session: Session) -> int:
        """Remove `session`'s subscriptions that may deliver nothing now; returns how many."""
        return self.policy.revoke_denied_subscriptions(session)

    async def _sweep(self) -> None:
        """Enforce CONNECT timeouts and keepalive (MQTT-3.1.2-24), expire old sessions."""
        last_expiry = time.monotonic()
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            now = time.monotonic()
            self.sweep_connections(now)
            if now - last_expiry > 10:
                last_expiry = now
                self.hub.expire_sessions(time.time())

    def sweep_connections(self, now: float) -> int:
        """Close what expired at `now`; how many connections were looked at (`ConnectionTimers`)."""
        return self.timers.sweep(now)

    # -- ConnectionHost (what MqttConnection asks) ---------------------------------------------
    async def authenticate(self, conn: MqttConnection, connect: Connect) -> Identity | None:
        """Ask every amqtt auth plugin (mqim's included); all answers that are not None must be True."""
        listener = self._names.get(conn.listener, conn.listener)
        identity = await ask_auth_plugins(
            self.plugins_manager,
            connect=connect,
            listener=listener,
            spec=self._listener_specs.get(listener),
            peer=conn.peer,
            transport=conn.transport,
        )
        # Roles come from the policy the broker holds, consistent with its rules.
        return None if identity is None else self.policy.with_roles(identity)

    def publish_will(self, conn: MqttConnection) -> None:
        """Publish a connection's will once (abnormal close, keepalive expiry, takeover)."""
        publish_will(conn, hub=self.hub, bridges=self.bridges)

    def admit_publish(self, conn: MqttConnection, pub: Publish) -> str | None:
        """Return None to route `pub`, or the reason it is refused (the client is told)."""
        return self.admission.admit_publish(conn, pub)

    def tell_error(self, identity: Identity, payload: bytes, code: ErrorCode, message: str) -> None:
        """Send an `error` payload to a user's inbox, echoing the request id when it has one."""
        tell_error(self.hub, identity, payload, code, message)

    def no_consumer(self, conn: MqttConnection, topic: str) -> None:
        """Count (and log, 1st, 2nd, 4th... time) an IM request no logic service could take."""
        self._count("no_consumer")
        count = self.hub.counters.extra["no_consumer"]
        if worth_logging(count):
            log.warning(
                "no logic service takes requests (%d refused so far, latest on %r from %s): "
                "start `mqim logic` or enable the embedded logic",
                count,
                topic[:200],
                conn.peer,
            )

    def accept_special_publish(self, conn: MqttConnection, pub: Publish) -> bool:
        """Accept the `$SYS/broker/connection/{name}/state` notices a Mosquitto bridge sends."""
        session = conn.session
        name = bridge_notice_name(pub.topic)
        if session is not None and session.is_bridge and name is not None:
            self.bridges.record(name, pub.payload, session.client_id)
            return True
        return False

    def dropped_sys_publish(self, conn: MqttConnection, topic: str) -> None:
        """Count a client PUBLISH to `$SYS/...` (acknowledged and dropped; logged 1st, 2nd, 4th...)."""
        self._count("sys_publish_dropped")
        count = self.hub.counters.extra["sys_publish_dropped"]
        if worth_logging(count):
            log.info(
                "client PUBLISH to %r from %s dropped (%d so far): $SYS is the server's",
                topic[:200],
                conn.peer,
                count,
            )

    # -- BrokerPort (in-process logic service) -------------------------------------------------
    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]:
        return self.hub.attach_listener(topic_filter, callback)

    def attach_consumer(self, topic_filter: str, callback: ConsumerCallback) -> Callable[[], None]:
        """Consume publishes matching `topic_filter`, taking each publisher's hold (see `Hub.route`)."""
        return self.hub.attach_consumer(topic_filter, callback)

    def publish_local(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        self.hub.publish_local(topic, payload, qos=qos, retain=retain)
