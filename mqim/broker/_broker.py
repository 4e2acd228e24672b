"""`MqimBroker`: amqtt's `Broker` with mqim's connection handling, routing and durable sessions.

From amqtt we keep the listener set-up (`_start_listeners`: TCP/WS, TLS contexts, bind parsing),
its configuration model and its plugin manager (authentication plugins at CONNECT). We replace
the per-connection protocol handler and the broadcast loop, where the defects listed in
DESIGN.md section 5 live, with `MqttConnection` + `Hub`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import websockets
from amqtt.broker import Broker
from amqtt.contexts import ListenerType

from mqim import mqtt as codec
from mqim.acl import AclEngine, Action, Identity, InvalidRule
from mqim.broker._authenticator import Authenticator, ConnectRequest, RefreshableAuthenticator
from mqim.broker._connection import MqttConnection, State
from mqim.broker._exceptions import ConfigError
from mqim.broker._hub import ConsumerCallback, Hub
from mqim.broker._limits import KeyedBuckets, ViolationWindow, address_key
from mqim.broker._logsummary import SummaryLog
from mqim.broker._notices import bridge_notice_name
from mqim.broker._policy import PolicySource, with_roles
from mqim.broker._proxy_gate import proxy_gate
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._ws import serve_websocket, ws_limits
from mqim.mqtt import Connect, Publish
from mqim.protocol import ErrorCode, ErrorPayload, InboxKind, inbox_topic, is_valid_id, peek_request_id
from mqim.storage import SessionStore, Storage, StorageError

log = logging.getLogger("mqim.broker")
_rate_refusals = SummaryLog(logger=log, what="CONNECT over the per-address rate")

_SWEEP_INTERVAL_S = 0.5

MAX_BRIDGE_STATUS = 1000
"""Bridges whose `$SYS/broker/connection/{name}/state` notices are kept in `bridge_status`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """A listening socket.

    Attributes:
        name: Unique name; the first listener is amqtt's "default".
        kind: "tcp" (MQTT, optionally TLS) or "ws" (MQTT over WebSocket, optionally TLS).
        host: Address to bind.
        port: Port to bind; 0 picks a free one (see `MqimBroker.port`).
        certfile: PEM certificate chain; with `keyfile`, turns on TLS.
        keyfile: PEM private key.
        cafile: CA bundle to verify client certificates (optional client auth).
        max_connections: Connections on this listener; 0 leaves only the global limit.
        proxy_protocol: Read a PROXY protocol header (v1 or v2) from sockets of `proxy_from`
            first and use the client address it names (plain TCP listeners only).
        proxy_from: Addresses or networks of the load balancers allowed to send that header.
    """

    name: str
    kind: Literal["tcp", "ws"] = "tcp"
    host: str = "127.0.0.1"
    port: int = 1883
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None
    max_connections: int = 0
    proxy_protocol: bool = False
    proxy_from: tuple[str, ...] = ()


class MqimBroker(Broker):  # type: ignore[misc]
    """The mqim MQTT broker. Use as an async context manager.

    Args:
        listeners: Sockets to listen on (at least one).
        settings: Limits.
        authenticator: Decides who connects.
        acl: Decides what each identity may publish, subscribe and receive.
        session_store: Durable sessions and retained messages; None keeps them in memory.
        auto_subscriptions: Server-managed subscriptions for an identity (DESIGN.md section 4).
        plugins: Extra amqtt plugins (dotted path -> options), loaded beside mqim's auth plugin.
        storage: Where ACL rules, roles and accounts live. With it the broker loads the stored
            rules and roles at start and polls for changes every `policy_poll_interval_s`
            (see `reload_policy`); None keeps only the rules `acl` was built with.
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
    ) -> None:
        if not listeners:
            raise ConfigError("at least one listener is required")
        self.settings = settings
        self.authenticator = authenticator
        self.session_store = session_store
        self.hub = Hub(settings=settings, acl=acl, store=session_store, auto_subscriptions=auto_subscriptions)
        self._listener_specs = {spec.name: spec for spec in listeners}
        self._connections: set[MqttConnection] = set()
        self._per_listener: dict[str, int] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._background: list[asyncio.Task[None]] = []
        self.bridge_status: dict[str, dict[str, Any]] = {}
        self._init_security(storage)
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
        await self._load_policy()
        self.transitions.start()
        await self._start_listeners()
        self.transitions.starting_success()
        self._background = [
            self._tasks.create_task(self.hub.committer.run(), name="mqim-committer"),
            self._tasks.create_task(self._sweep(), name="mqim-sweeper"),
        ]
        if self._policy is not None:
            self._background.append(self._tasks.create_task(self._watch_policy(), name="mqim-policy"))
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
        if listener_type == ListenerType.TCP:
            loop = asyncio.get_running_loop()
            factory: Callable[[], asyncio.Protocol] = partial(
                MqttConnection, broker=self, listener=listener_name
            )
            spec = self._listener_specs.get(self._names.get(listener_name, listener_name))
            if spec is not None and spec.proxy_protocol:
                if ssl_context is not None:
                    raise ConfigError(
                        f"listener {spec.name!r}: PROXY protocol on a TLS listener is not supported"
                    )
                # The connection sees the client's address from the header (limits, logs, auth).
                factory = proxy_gate(
                    factory, proxy_from=spec.proxy_from, timeout_s=self.settings.connect_timeout_s
                )
            return await loop.create_server(
                factory,
                address,
                port,
                ssl=ssl_context,
                reuse_address=True,
                backlog=4096,
            )
        if listener_type == ListenerType.WS:
            limits = ws_limits(self.settings)
            return await websockets.serve(
                partial(self._ws_connected, listener_name=listener_name),
                address,
                port,
                ssl=ssl_context,
                subprotocols=[websockets.Subprotocol("mqtt")],
                max_size=limits.max_size,
                max_queue=limits.max_queue,
            )
        raise ConfigError(f"unsupported listener type {listener_type}")

    async def _ws_connected(self, websocket: Any, listener_name: str) -> None:
        await serve_websocket(websocket, MqttConnection(broker=self, listener=listener_name))

    # -- connection accounting -----------------------------------------------------------------
    def connection_opened(self, conn: MqttConnection) -> bool:
        """Count a new socket; False when a limit is reached (its CONNECT gets CONNACK 3)."""
        self._connections.add(conn)
        count = self._per_listener.get(conn.listener, 0) + 1
        self._per_listener[conn.listener] = count
        spec = self._listener_specs.get(self._names.get(conn.listener, conn.listener))
        per_listener_ok = spec is None or spec.max_connections <= 0 or count <= spec.max_connections
        if not (len(self._connections) <= self.settings.max_connections and per_listener_ok):
            return False
        return self._connect_rate_ok(conn)

    def connection_closed(self, conn: MqttConnection) -> None:
        """Release the slot of a socket, exactly once."""
        if conn in self._connections:
            self._connections.remove(conn)
            self._per_listener[conn.listener] -= 1
        self._violations.pop(conn, None)
        user = self._conn_user.pop(conn, None)
        if user is not None:
            conns = self._user_conns.get(user)
            if conns is not None:
                conns.discard(conn)
                if not conns:
                    del self._user_conns[user]

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

    # -- security: limits, live policy, kicks --------------------------------------------------
    def _init_security(self, storage: Storage | None) -> None:
        settings = self.settings
        self.storage = storage
        self._static_rules = self.hub.acl.rules
        self._policy = PolicySource(storage=storage) if storage is not None else None
        self._policy_lock = asyncio.Lock()
        self._roles: dict[str, frozenset[str]] = {}
        # Accounts seen disabled or removed since start: refused even if their authentication
        # read storage just before the change. Bounded by the accounts in storage.
        self._blocked: set[str] = set()
        self._user_conns: dict[str, set[MqttConnection]] = {}
        self._conn_user: dict[MqttConnection, str] = {}
        self._violations: dict[MqttConnection, ViolationWindow] = {}
        tracked = max(settings.max_tracked_addresses, 1)
        self._publish_buckets: KeyedBuckets[str] | None = (
            # One bucket per publishing user: at least as many as there can be connections.
            KeyedBuckets(
                rate=settings.publish_rate,
                burst=max(settings.publish_burst, 1),
                max_keys=max(tracked, settings.max_connections),
            )
            if settings.publish_rate > 0
            else None
        )
        self._connect_buckets: KeyedBuckets[str] | None = (
            KeyedBuckets(
                rate=settings.connect_rate_per_address,
                burst=max(settings.connect_burst_per_address, 1),
                max_keys=tracked,
            )
            if settings.connect_rate_per_address > 0
            else None
        )
        self.hub.observers.append(_SubscriptionGuard(self))

    def _count(self, name: str, n: int = 1) -> None:
        extra = self.hub.counters.extra
        extra[name] = extra.get(name, 0) + n

    def _connect_rate_ok(self, conn: MqttConnection) -> bool:
        buckets = self._connect_buckets
        if buckets is None or conn.transport is None:
            return True
        peer = conn.transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else conn.peer
        if buckets.take(address_key(host), time.monotonic()):
            return True
        self._count("connect_rate_refused")
        _rate_refusals.note(host, "connect rate", "connect rate of %s exceeded: CONNACK 3", host)
        return False

    def admit_connection(self, conn: MqttConnection, identity: Identity) -> tuple[int, str] | None:
        """Called once authentication succeeded: None admits, else (CONNACK code, reason).

        Refuses an account disabled or removed meanwhile (CONNACK 5) and a user already holding
        `max_connections_per_user` connections (CONNACK 5); a connection that takes over the
        same client id does not count twice.
        """
        user = identity.user
        if not user:
            return None
        if user in self._blocked:
            return codec.REFUSED_NOT_AUTHORIZED, f"account {user!r} is disabled"
        limit = self.settings.max_connections_per_user
        conns = self._user_conns.get(user, set())
        if limit > 0 and identity.kind not in self.settings.limit_exempt_kinds:
            count = len(conns)
            client_id = conn.connect.client_id if conn.connect is not None else ""
            existing = self.hub.sessions.get(client_id) if client_id else None
            if existing is not None and existing.conn in conns:
                count -= 1  # a takeover replaces that connection
            if count >= limit:
                self._count("connections_per_user_refused")
                return codec.REFUSED_NOT_AUTHORIZED, f"user {user!r} already has {count} connections"
        conns.add(conn)
        self._user_conns[user] = conns
        self._conn_user[conn] = user
        return None

    def kick_user(self, user: str, reason: str = "account disabled") -> int:
        """Close every connection of `user` now; returns how many were closed."""
        conns = list(self._user_conns.get(user, ()))
        for conn in conns:
            conn.close(reason, abort=True)
        if conns:
            self._count("kicked", len(conns))
            log.info("closed %d connection(s) of %r: %s", len(conns), user, reason)
        return len(conns)

    def block_user(self, user: str, reason: str = "account disabled") -> int:
        """Refuse `user` from now on (until `unblock_user`) and close its connections."""
        self._blocked.add(user)
        return self.kick_user(user, reason)

    def unblock_user(self, user: str) -> None:
        """Stop refusing `user` (its account was enabled again)."""
        self._blocked.discard(user)

    def user_connections(self, user: str) -> int:
        """The number of admitted connections `user` holds."""
        return len(self._user_conns.get(user, ()))

    def _refuse_publish(
        self, conn: MqttConnection, identity: Identity, pub: Publish, code: ErrorCode, message: str
    ) -> str:
        self.tell_error(identity, pub.payload, code, message)
        window = self._violations.get(conn)
        if window is None:
            window = self._violations[conn] = ViolationWindow(
                max_violations=max(self.settings.max_violations, 1),
                window_s=max(self.settings.violation_window_s, 0.001),
            )
        if window.record(time.monotonic()):
            self._count("abuse_disconnects")
            log.warning(
                "closing %s of %r: %d refused publishes within %.0fs (last: %s)",
                conn.peer,
                identity.user,
                window.max_violations,
                window.window_s,
                code.value,
            )
            conn.close(f"sustained abuse ({code.value})")
        return code.value

    async def _load_policy(self) -> None:
        """Initial load: stored rules and roles must be valid, or the broker does not start."""
        if self._policy is None:
            return
        try:
            await self.reload_policy()
        except InvalidRule as exc:
            raise ConfigError(str(exc)) from exc

    async def reload_policy(self) -> None:
        """Read rule, role, account and token key changes from storage and apply them now.

        Called every `policy_poll_interval_s` by the broker; callers that just changed
        storage in this process may call it to apply the change at once.

        Raises:
            InvalidRule: A stored rule does not parse (the previous rules stay in force).
            StorageError: Storage failed; nothing was half-applied.
        """
        policy = self._policy
        if policy is None:
            return
        async with self._policy_lock:
            update = await policy.acl_update()
            if update is not None:
                self._apply_roles(update.roles)
                self.hub.acl.set_rules([*self._static_rules, *update.rules])
                log.info(
                    "ACL version %d: %d stored rule(s), %d user(s) with roles",
                    update.version,
                    len(update.rules),
                    len(update.roles),
                )
                await self._recheck_subscriptions()
            accounts = await policy.account_update(list(self._user_conns))
            for user in accounts.allowed:
                self.unblock_user(user)
            for user in accounts.blocked:
                self.block_user(user)
            if isinstance(self.authenticator, RefreshableAuthenticator):
                await self.authenticator.refresh()

    def _apply_roles(self, roles: dict[str, frozenset[str]]) -> None:
        self._roles = roles
        for session in self.hub.sessions.values():
            identity = session.identity
            if identity is None:
                continue
            updated = with_roles(identity, roles)
            if updated is not identity:
                session.identity = updated
                conn = session.conn
                if isinstance(conn, MqttConnection):
                    conn.identity = updated

    async def _recheck_subscriptions(self) -> None:
        # Every session's receive scopes follow the new rules and roles at once (a persistent
        # session that is away keeps queueing only what it may receive). Subscriptions whose
        # scope is now empty are removed from connected sessions; one that is away keeps them
        # (delivering nothing) until it comes back (`_SubscriptionGuard`), as its identity then
        # comes from a live authentication.
        sessions = list(self.hub.sessions.values())
        for index, session in enumerate(sessions):
            if index and index % 1000 == 0:
                await asyncio.sleep(0)  # thousands of sessions: let the loop breathe
            if self.hub.sessions.get(session.client_id) is not session:
                continue
            if session.conn is not None:
                self.revoke_denied_subscriptions(session)
            else:
                self.hub.refresh_scopes(session, drop_empty=False)

    def revoke_denied_subscriptions(self, session: Session) -> int:
        """Recompile `session`'s receive scopes; remove the subscriptions that may deliver nothing.

        Returns how many were removed.
        """
        denied = self.hub.refresh_scopes(session, drop_empty=True)
        for topic_filter in denied:
            log.info("subscription %r of %s removed: no longer allowed", topic_filter, session.client_id)
        if denied:
            self._count("subscriptions_revoked", len(denied))
        return len(denied)

    async def _watch_policy(self) -> None:
        """Poll storage for policy changes until cancelled; a failed poll is logged and retried."""
        interval = max(self.settings.policy_poll_interval_s, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_policy()
            except (StorageError, InvalidRule) as exc:
                log.error("policy reload failed (previous policy stays in force): %s", exc)

    async def _sweep(self) -> None:
        """Enforce CONNECT timeouts and keepalive (MQTT-3.1.2-24), expire old sessions."""
        last_expiry = time.monotonic()
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            now = time.monotonic()
            timeout = self.settings.connect_timeout_s
            for conn in list(self._connections):
                if conn.state in (State.AWAIT_CONNECT, State.AUTHENTICATING):
                    if now - conn.opened_at > timeout:
                        conn.close("no CONNECT in time", abort=True)
                elif (
                    conn.state is State.CONNECTED
                    and conn.keepalive > 0
                    and now - conn.last_rx > conn.keepalive
                ):
                    log.info(
                        "keepalive expired for %s", conn.session.client_id if conn.session else conn.peer
                    )
                    conn.close("keepalive expired", abort=True)
            if now - last_expiry > 10:
                last_expiry = now
                self.hub.expire_sessions(time.time())

    # -- hooks used by MqttConnection ----------------------------------------------------------
    async def authenticate(self, conn: MqttConnection, connect: Connect) -> Identity | None:
        """Ask every amqtt auth plugin (mqim's included); all answers that are not None must be True."""
        transport = conn.transport
        listener = self._names.get(conn.listener, conn.listener)
        spec = self._listener_specs.get(listener)
        # Only a listener with its own CA passes certificates on: without one, the TLS context
        # verifies client certificates against the system's public CAs, which name no user.
        verified = spec is not None and spec.cafile is not None and transport is not None
        request = ConnectRequest(
            username=connect.username,
            password=connect.password,
            client_id=connect.client_id,
            listener=listener,
            remote_address=conn.peer,
            peer_cert=(transport.get_extra_info("peercert") or None) if verified and transport else None,
            bridge=connect.bridge,
        )
        results = await self.plugins_manager.map_plugin_auth(session=request)
        answers = [r for r in results.values() if r is not None]
        if not answers or not all(answers):
            return None
        identity = request.identity
        if identity is None and connect.username:
            identity = Identity(user=connect.username, client_id=connect.client_id, kind="user")
        if identity is None:
            return None
        if identity.user and not is_valid_id(identity.user):
            # Topics are built from user ids (`im/v1/u/{user}/...`, `%u` rules): a name with
            # `+`, `#`, `/`, `$`, NUL... in it (an account made around the CLI, or by a plugin)
            # could only be trouble. Refused at the door.
            log.warning("refusing %s: user name %r is not a valid id", conn.peer, identity.user)
            return None
        # Roles come from the policy the broker holds, consistent with its rules.
        return with_roles(identity, self._roles)

    def publish_will(self, conn: MqttConnection) -> None:
        """Publish a connection's will once (abnormal close, keepalive expiry, takeover)."""
        connect = conn.connect
        session = conn.session
        if connect is None or connect.will_topic is None or connect.will_payload is None:
            return
        topic, payload, qos, retain = (
            connect.will_topic,
            connect.will_payload,
            connect.will_qos,
            connect.will_retain,
        )
        connect.will_topic = None
        notice = bridge_notice_name(topic)
        if notice is not None:
            # A bridge's `$SYS/.../state` will ("0": gone) is status, not a message to route.
            if session is not None and session.is_bridge:
                self._record_bridge_state(notice, payload, session.client_id)
            return
        if topic == "$SYS" or topic.startswith("$SYS/"):
            self._count("sys_publish_dropped")  # the server's own topics: never from a client
            return
        if retain:
            self.hub.retain(topic, payload, qos)
        if self.hub.route(topic, payload, qos, origin=session, retain=retain) or retain:
            self.hub.committer.kick()

    def admit_publish(self, conn: MqttConnection, pub: Publish) -> str | None:
        """Return None to route `pub`, or the reason it is refused (the client is told)."""
        identity = conn.identity
        assert identity is not None
        settings = self.settings
        if identity.kind not in settings.limit_exempt_kinds:
            buckets = self._publish_buckets
            if buckets is not None and not buckets.take(identity.user or conn.peer, time.monotonic()):
                self._count("rate_limited")
                rate, burst = settings.publish_rate, settings.publish_burst
                message = f"publish rate limit reached ({rate:g}/s, burst {burst})"
                return self._refuse_publish(conn, identity, pub, ErrorCode.RATE_LIMITED, message)
            if len(pub.payload) > settings.max_payload_bytes:
                self._count("too_large")
                message = f"payload of {len(pub.payload)} bytes exceeds {settings.max_payload_bytes}"
                return self._refuse_publish(conn, identity, pub, ErrorCode.TOO_LARGE, message)
        if self.hub.acl.allowed(identity, Action.PUBLISH, pub.topic):
            return None
        self.hub.counters.acl_denied_publish += 1
        log.info("%s may not publish on %r", identity.user or conn.peer, pub.topic)
        message = f"publishing on {pub.topic!r} is not allowed"
        return self._refuse_publish(conn, identity, pub, ErrorCode.FORBIDDEN, message)

    def tell_error(self, identity: Identity, payload: bytes, code: ErrorCode, message: str) -> None:
        """Send an `error` payload to a user's inbox, echoing the request id when it has one."""
        if not identity.user or identity.kind != "user" or not is_valid_id(identity.user):
            return
        ref: str | None = None
        try:
            body = json.loads(payload) if payload[:1] == b"{" else None
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                ref = body["id"][:64]
        except (ValueError, UnicodeDecodeError, RecursionError):
            # Truncated (the head of an oversize PUBLISH) or nested too deep: look at its start.
            ref = peek_request_id(payload)
        error = ErrorPayload(ref=ref, code=code, message=message)
        self.hub.publish_local(inbox_topic(identity.user, InboxKind.ERROR), error.to_json(), qos=1)

    def no_consumer(self, conn: MqttConnection, topic: str) -> None:
        """Count (and log, 1st, 2nd, 4th... time) an IM request no logic service could take."""
        self._count("no_consumer")
        count = self.hub.counters.extra["no_consumer"]
        if count & (count - 1) == 0:
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
            self._record_bridge_state(name, pub.payload, session.client_id)
            return True
        return False

    def dropped_sys_publish(self, conn: MqttConnection, topic: str) -> None:
        """Count a client PUBLISH to `$SYS/...` (acknowledged and dropped; logged 1st, 2nd, 4th...)."""
        self._count("sys_publish_dropped")
        count = self.hub.counters.extra["sys_publish_dropped"]
        if count & (count - 1) == 0:
            log.info(
                "client PUBLISH to %r from %s dropped (%d so far): $SYS is the server's",
                topic[:200],
                conn.peer,
                count,
            )

    def _record_bridge_state(self, name: str, payload: bytes, client_id: str) -> None:
        if name not in self.bridge_status and len(self.bridge_status) >= MAX_BRIDGE_STATUS:
            log.warning("bridge status of %r ignored: %d bridges already tracked", name, MAX_BRIDGE_STATUS)
            return
        self.bridge_status[name] = {
            "state": payload[:64].decode("utf-8", "replace"),
            "ts": time.time(),
            "client_id": client_id,
        }

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


class _SubscriptionGuard:
    """Re-checks a session's subscriptions when it (re)connects: a persistent session may hold
    filters from before a rule or role change made while it was away."""

    def __init__(self, broker: MqimBroker) -> None:
        self._broker = broker

    def session_connected(self, session: Session) -> None:
        self._broker.revoke_denied_subscriptions(session)

    def session_disconnected(self, session: Session) -> None:
        return None

    def delivered(self, session: Session, topic: str, payload: bytes) -> None:
        return None
