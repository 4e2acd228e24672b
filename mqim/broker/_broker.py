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

from mqim.acl import AclEngine, Action, Identity
from mqim.broker._auth import Authenticator, ConnectRequest
from mqim.broker._codec import Connect, Publish
from mqim.broker._connection import MqttConnection, State
from mqim.broker._exceptions import ConfigError
from mqim.broker._hub import Hub
from mqim.broker._settings import BrokerSettings
from mqim.broker._ws import serve_websocket
from mqim.protocol import ErrorCode, ErrorPayload, InboxKind, inbox_topic
from mqim.storage import SessionStore

log = logging.getLogger("mqim.broker")

_SWEEP_INTERVAL_S = 0.5


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
    """

    name: str
    kind: Literal["tcp", "ws"] = "tcp"
    host: str = "127.0.0.1"
    port: int = 1883
    certfile: Path | None = None
    keyfile: Path | None = None
    cafile: Path | None = None
    max_connections: int = 0


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
        self.transitions.start()
        await self._start_listeners()
        self.transitions.starting_success()
        self._background = [
            self._tasks.create_task(self.hub.committer.run(), name="mqim-committer"),
            self._tasks.create_task(self._sweep(), name="mqim-sweeper"),
        ]
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
        if self.session_store is not None:
            await self.session_store.close()
        if self.transitions.state == "started":
            self.transitions.shutdown()
            self.transitions.stopping_success()
        await self.plugins_manager.close()
        log.info("broker stopped")

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
            return await loop.create_server(
                partial(MqttConnection, broker=self, listener=listener_name),
                address,
                port,
                ssl=ssl_context,
                reuse_address=True,
                backlog=4096,
            )
        if listener_type == ListenerType.WS:
            return await websockets.serve(
                partial(self._ws_connected, listener_name=listener_name),
                address,
                port,
                ssl=ssl_context,
                subprotocols=[websockets.Subprotocol("mqtt")],
                max_size=self.settings.max_packet_bytes + 8,
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
        return len(self._connections) <= self.settings.max_connections and per_listener_ok

    def connection_closed(self, conn: MqttConnection) -> None:
        """Release the slot of a socket, exactly once."""
        if conn in self._connections:
            self._connections.remove(conn)
            self._per_listener[conn.listener] -= 1

    @property
    def connection_count(self) -> int:
        return len(self._connections)

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
        request = ConnectRequest(
            username=connect.username,
            password=connect.password,
            client_id=connect.client_id,
            listener=self._names.get(conn.listener, conn.listener),
            remote_address=conn.peer,
            peer_cert=transport.get_extra_info("peercert") if transport is not None else None,
            bridge=connect.bridge,
        )
        results = await self.plugins_manager.map_plugin_auth(session=request)
        answers = [r for r in results.values() if r is not None]
        if not answers or not all(answers):
            return None
        if request.identity is not None:
            return request.identity
        if connect.username:
            return Identity(user=connect.username, client_id=connect.client_id, kind="user")
        return None

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
        if retain:
            self.hub.retain(topic, payload, qos)
        if self.hub.route(topic, payload, qos, origin=session) or retain:
            self.hub.committer.kick()

    def admit_publish(self, conn: MqttConnection, pub: Publish) -> str | None:
        """Return None to route `pub`, or the reason it is refused (the client is told)."""
        identity = conn.identity
        assert identity is not None
        if self.hub.acl.allowed(identity, Action.PUBLISH, pub.topic):
            return None
        self.hub.counters.acl_denied_publish += 1
        log.info("%s may not publish on %r", identity.user or conn.peer, pub.topic)
        self.tell_error(
            identity, pub.payload, ErrorCode.FORBIDDEN, f"publishing on {pub.topic!r} is not allowed"
        )
        return "forbidden"

    def tell_error(self, identity: Identity, payload: bytes, code: ErrorCode, message: str) -> None:
        """Send an `error` payload to a user's inbox, echoing the request id when it has one."""
        if not identity.user or identity.kind != "user":
            return
        ref: str | None = None
        try:
            body = json.loads(payload)
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                ref = body["id"][:64]
        except (ValueError, UnicodeDecodeError):
            ref = None
        error = ErrorPayload(ref=ref, code=code, message=message)
        self.hub.publish_local(inbox_topic(identity.user, InboxKind.ERROR), error.to_json(), qos=1)

    def accept_special_publish(self, conn: MqttConnection, pub: Publish) -> bool:
        """Accept the `$SYS/broker/connection/{name}/state` notices a Mosquitto bridge sends."""
        session = conn.session
        parts = pub.topic.split("/")
        if (
            session is not None
            and session.is_bridge
            and len(parts) == 5
            and parts[:3] == ["$SYS", "broker", "connection"]
            and parts[4] == "state"
        ):
            self.bridge_status[parts[3]] = {
                "state": pub.payload.decode("utf-8", "replace"),
                "ts": time.time(),
                "client_id": session.client_id,
            }
            return True
        return False

    # -- BrokerPort (in-process logic service) -------------------------------------------------
    def attach_listener(
        self, topic_filter: str, callback: Callable[[str, bytes], None]
    ) -> Callable[[], None]:
        return self.hub.attach_listener(topic_filter, callback)

    def publish_local(self, topic: str, payload: bytes, *, qos: int, retain: bool = False) -> None:
        self.hub.publish_local(topic, payload, qos=qos, retain=retain)
