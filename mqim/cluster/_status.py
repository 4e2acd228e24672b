"""`mqim cluster status`: what the registry in Redis says about the nodes (read-only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from mqim.cluster._exceptions import ClusterError
from mqim.cluster._keys import GROUP, ClusterKeys


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    """One node as the registry shows it.

    Attributes:
        node_id: The node.
        alive: Its heartbeat key exists (it is not expired).
        heartbeat: The last heartbeat it wrote (connections, sessions, queued, outbox, counters).
        routes: Filters in its route set.
        owned_sessions: Persistent sessions it owns.
        stream_length: Entries in its stream (consumed ones stay until trimmed).
        pending: Entries read but not yet acknowledged.
        lag: Entries not yet read by its consumer group (None when Redis cannot tell).
    """

    node_id: str
    alive: bool
    heartbeat: dict[str, Any] = field(default_factory=dict)
    routes: int = 0
    owned_sessions: int = 0
    stream_length: int = 0
    pending: int = 0
    lag: int | None = None


async def read_cluster_status(url: str, *, prefix: str = "mqim", timeout_s: float = 5.0) -> list[NodeStatus]:
    """Every registered node, sorted by id.

    Raises:
        ClusterError: Redis unreachable or refusing.
    """
    keys = ClusterKeys(prefix)
    client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        raw_nodes: Any = await client.hkeys(keys.nodes)
        nodes = sorted(n.decode() for n in raw_nodes)
        result = []
        for node in nodes:
            pipe = client.pipeline(transaction=False)
            pipe.get(keys.alive(node))
            pipe.scard(keys.routes(node))
            pipe.scard(keys.owned(node))
            pipe.xlen(keys.stream(node))
            beat, routes, owned, length = await pipe.execute()
            pending, lag = 0, None
            try:
                groups: Any = await client.xinfo_groups(keys.stream(node))
            except ResponseError:
                groups = []
            for group in groups:
                name = group.get("name")
                if name in (GROUP, GROUP.encode()):
                    pending = int(group.get("pending") or 0)
                    raw_lag = group.get("lag")
                    lag = int(raw_lag) if raw_lag is not None else None
            result.append(
                NodeStatus(
                    node_id=node,
                    alive=beat is not None,
                    heartbeat=json.loads(beat) if beat else {},
                    routes=int(routes),
                    owned_sessions=int(owned),
                    stream_length=int(length),
                    pending=pending,
                    lag=lag,
                )
            )
        return result
    except (RedisError, OSError) as exc:
        raise ClusterError(f"cluster Redis at {url}: {exc}") from exc
    finally:
        await client.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDeath:
    """One adoption of a dead node, as its adopter recorded it.

    Attributes:
        node: The node that died.
        adopted_by: The node that adopted its sessions and stream.
        detected: When the adopter found it dead (epoch seconds).
        adopted: When the adoption finished (epoch seconds).
        sessions: Persistent sessions the adopter loaded.
        entries: Stream entries it delivered from the dead node's stream.
    """

    node: str
    adopted_by: str
    detected: float
    adopted: float
    sessions: int = 0
    entries: int = 0


async def read_node_deaths(
    url: str, *, prefix: str = "mqim", limit: int = 20, timeout_s: float = 5.0
) -> list[NodeDeath]:
    """The most recent adoptions, newest first (at most `limit`; malformed records skipped).

    Raises:
        ClusterError: Redis unreachable or refusing.
    """
    keys = ClusterKeys(prefix)
    client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        raw: Any = await client.lrange(keys.deaths, 0, max(limit, 1) - 1)
    except (RedisError, OSError) as exc:
        raise ClusterError(f"cluster Redis at {url}: {exc}") from exc
    finally:
        await client.aclose()
    deaths = []
    for item in raw:
        try:
            doc = json.loads(item)
            deaths.append(
                NodeDeath(
                    node=str(doc["node"]),
                    adopted_by=str(doc["adopted_by"]),
                    detected=float(doc["detected"]),
                    adopted=float(doc["adopted"]),
                    sessions=int(doc.get("sessions", 0)),
                    entries=int(doc.get("entries", 0)),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return deaths
