"""The admin endpoints as an `HttpHandler`: `/metrics`, `/healthz`, `/readyz`, `/status`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from mqim.admin._checks import CHECK_TIMEOUT_S, readiness
from mqim.admin._collector import ClusterNodes, MqimCollector
from mqim.admin._sources import NodeParts
from mqim.admin._status import cluster_members, node_status
from mqim.cluster import ClusterKeys
from mqim.web import HttpRequest, HttpResponse

log = logging.getLogger("mqim.admin")

PATHS = ("/metrics", "/healthz", "/readyz", "/status")
"""What the admin handler answers; anything else goes to the next handler."""


class AdminEndpoints:
    """Answers the admin paths for one node.

    Args:
        parts: The node's components.
        cluster_prefix: The cluster's Redis key prefix (cluster mode).
    """

    def __init__(self, *, parts: NodeParts, cluster_prefix: str = "mqim") -> None:
        self._parts = parts
        self._keys = ClusterKeys(cluster_prefix)
        self._started = time.time()
        self._nodes = ClusterNodes() if parts.cluster is not None else None
        # Our own registry: the process-wide default one would mix in whatever else registers.
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MqimCollector(parts=parts, nodes=self._nodes))

    async def handle(self, request: HttpRequest) -> HttpResponse | None:
        path = request.path
        if path == "/metrics":
            await self._refresh_nodes()
            # Collected on the loop: the collector reads the loop's own structures.
            body = generate_latest(self.registry)
            return HttpResponse(
                HTTPStatus.OK, (("Content-Type", CONTENT_TYPE_LATEST), ("Cache-Control", "no-store")), body
            )
        if path == "/healthz":
            return _json(HTTPStatus.OK, {"status": "alive"})
        if path == "/readyz":
            checks = await readiness(self._parts)
            ready = all(check["ok"] for check in checks.values())
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return _json(status, {"ready": ready, "checks": checks})
        if path == "/status":
            members = await self._members()
            return _json(HTTPStatus.OK, node_status(self._parts, started=self._started, members=members))
        return None

    async def _members(self) -> list[dict[str, Any]] | None:
        link = self._parts.cluster
        if link is None:
            return None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                return await cluster_members(link.redis, self._keys)
        except (TimeoutError, RedisError, OSError) as exc:
            log.debug("cluster members unavailable: %s", exc)
            return None

    async def _refresh_nodes(self) -> None:
        nodes = self._nodes
        if nodes is None:
            return
        members = await self._members()
        if members is not None:
            nodes.registered = len(members)
            nodes.alive = sum(1 for m in members if m["alive"])


def _json(status: HTTPStatus, doc: dict[str, Any]) -> HttpResponse:
    body = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    return HttpResponse(status, (("Content-Type", "application/json"), ("Cache-Control", "no-store")), body)
