"""A node's observability: the admin listener, the web page's listener and the `$SYS` publisher.

The server compositions enter one `Observability` (after the broker, the logic and the bridges
started) and hold nothing else of it. The web page and the admin endpoints share one listener
when they are configured on the same host and port (the admin paths are answered first, the
rest is the page's); otherwise each has its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import mqim
from mqim.admin._endpoints import AdminEndpoints
from mqim.admin._sources import BridgesView, ClusterView, LogicView, NodeParts, StorageProbe
from mqim.admin._sys import SysPublisher
from mqim.auth import CompositeAuthenticator, StorageAuthenticator
from mqim.broker import MqimBroker
from mqim.web import HttpHandler, HttpServer, WebError, WebOptions, WebSite

log = logging.getLogger("mqim.admin")


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminOptions:
    """Where the admin endpoints listen.

    Attributes:
        host: Address to bind (loopback by default: `/status` shows internals).
        port: Port; 0 picks a free one.
    """

    host: str = "127.0.0.1"
    port: int = 9883


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilityOptions:
    """What a node serves besides MQTT.

    Attributes:
        admin: The admin listener, or None for none.
        sys_interval_s: Seconds between `$SYS/broker/...` publications; 0 for none.
        web: The web page's listener, or None (it also needs `ws_port`).
    """

    admin: AdminOptions | None = None
    sys_interval_s: float = 0.0
    web: WebOptions | None = None


def node_parts(
    *,
    broker: MqimBroker,
    storage: StorageProbe,
    storage_kind: str,
    logic: LogicView | None = None,
    bridges: BridgesView | None = None,
    cluster: ClusterView | None = None,
    data_dir: str = "",
) -> NodeParts:
    """The views the admin endpoints read, taken from a node's components."""
    auth = broker.authenticator
    password = auth.method(StorageAuthenticator) if isinstance(auth, CompositeAuthenticator) else None
    return NodeParts(
        broker=broker,
        storage=storage,
        storage_kind=storage_kind,
        password_stats=password.stats if password is not None else None,
        logic=logic,
        bridges=bridges,
        cluster=cluster,
        version=mqim.__version__,
        data_dir=data_dir,
    )


class Observability:
    """Runs a node's admin listener, web listener and `$SYS` publisher. Async context manager.

    A taken admin port is logged as an error and the node runs without the admin endpoints
    (observability must not take the message service down; `/readyz` probes then fail, which
    is how an orchestrator notices). A taken web port is fatal, as before.

    Args:
        options: What to serve.
        parts: The node's components (see `node_parts`).
        broker: The broker whose hub `$SYS` is published through.
        ws_port: The bound WebSocket port the page connects to; None serves no page.
        cluster_prefix: The cluster's Redis key prefix (cluster mode).
        name: Suffix of the publisher task's name (the node id in a cluster).
    """

    def __init__(
        self,
        *,
        options: ObservabilityOptions,
        parts: NodeParts,
        broker: MqimBroker,
        ws_port: int | None = None,
        cluster_prefix: str = "mqim",
        name: str = "",
    ) -> None:
        self.options = options
        self.parts = parts
        self._broker = broker
        self._ws_port = ws_port
        self._prefix = cluster_prefix
        self._name = name
        self.admin: HttpServer | None = None
        self.web: HttpServer | None = None
        self.sys: SysPublisher | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        stack = self._stack
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def _start(self, stack: contextlib.AsyncExitStack) -> None:
        options = self.options
        if options.sys_interval_s > 0:
            self.sys = SysPublisher(
                hub=self._broker.hub, version=mqim.__version__, interval_s=options.sys_interval_s
            )
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            suffix = f":{self._name}" if self._name else ""
            stack.callback(tasks.create_task(self.sys.run(), name=f"mqim-sys{suffix}").cancel)
        web, admin = options.web, options.admin
        if web is not None and self._ws_port is None:
            log.warning("web client not served: it needs a WebSocket listener (server.ws_port)")
            web = None
        site = WebSite(options=web, ws_port=self._ws_port or 0) if web is not None else None
        shared = (
            site is not None
            and web is not None
            and admin is not None
            and (web.host, web.port) == (admin.host, admin.port)
        )
        if admin is not None:
            handlers: list[HttpHandler] = [AdminEndpoints(parts=self.parts, cluster_prefix=self._prefix)]
            if shared and site is not None:
                handlers.append(site)
            server = HttpServer(
                host=admin.host, port=admin.port, handlers=handlers, what="the admin endpoints"
            )
            try:
                self.admin = await stack.enter_async_context(server)
            except WebError as exc:
                if shared:
                    raise  # the page was asked for on this port: as fatal as its own listener
                log.error("%s: running without the admin endpoints", exc)
            if shared:
                self.web = self.admin
        if site is not None and web is not None and not shared:
            server = HttpServer(
                host=web.host,
                port=web.port,
                handlers=[site],
                max_connections=web.max_connections,
                what="the web client",
            )
            self.web = await stack.enter_async_context(server)
