"""`/status`: one JSON document describing a node (what `mqim status` prints)."""

from __future__ import annotations

import time
from typing import Any

from mqim.admin._sources import NodeParts, RedisPing
from mqim.broker import TOPIC_CLASSES, Traffic
from mqim.cluster import ClusterKeys


async def cluster_members(redis: RedisPing, keys: ClusterKeys) -> list[dict[str, Any]]:
    """Registered nodes with whether each is alive (two round trips: HKEYS, then EXISTS each).

    Raises:
        redis.exceptions.RedisError, OSError: Redis failed (callers bound and catch it).
    """
    client: Any = redis
    raw = await client.hkeys(keys.nodes)
    nodes = sorted(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
    if not nodes:
        return []
    pipe = client.pipeline(transaction=False)
    for node in nodes:
        pipe.exists(keys.alive(node))
    alive = await pipe.execute()
    return [{"node_id": node, "alive": bool(up)} for node, up in zip(nodes, alive, strict=True)]


def node_status(parts: NodeParts, *, started: float, members: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The node's state now (cheap: one pass over the sessions)."""
    broker = parts.broker
    hub = broker.hub
    live = persistent = offline = queued = queued_bytes = 0
    for session in hub.sessions.values():
        if session.conn is not None:
            live += 1
        if session.persistent:
            persistent += 1
            if session.conn is None:
                offline += 1
        queued += len(session.queue)
        queued_bytes += session.queued_bytes
    by_listener: dict[str, dict[str, int]] = {}
    for (listener, kind), count in broker.connection_stats().items():
        by_listener.setdefault(listener, {})[kind] = count
    traffic = hub.traffic
    received = Traffic.by_class(traffic.messages_in)
    sent = Traffic.by_class(traffic.messages_out)
    doc: dict[str, Any] = {
        "version": parts.version,
        "mode": "cluster" if parts.cluster is not None else "standalone",
        "node_id": parts.cluster.node_id if parts.cluster is not None else None,
        "uptime_s": round(time.time() - started, 1),
        "listeners": [
            {"name": name, "kind": kind, "host": host, "port": port}
            for name, (kind, host, port) in sorted(broker.listener_ports().items())
        ],
        "connections": {"total": broker.connection_count, "by_listener": by_listener},
        "sessions": {"live": live, "persistent": persistent, "offline": offline},
        "queues": {
            "messages": queued,
            "bytes": queued_bytes,
            "overflowed": hub.counters.evicted,
            "held_uplinks": hub.held,
        },
        "messages": {
            "received": {c: sum(received[(c, q)] for q in range(3)) for c in TOPIC_CLASSES},
            "sent": {c: sum(sent[(c, q)] for q in range(3)) for c in TOPIC_CLASSES},
            "retained": len(hub.retained),
        },
        "storage": {
            "kind": parts.storage_kind,
            "data_dir": parts.data_dir,
            "session_commits": hub.committer.committed,
            "session_commit_failures": hub.committer.failures,
        },
        "logic": None,
        "cluster": None,
    }
    if parts.logic is not None:
        counters = parts.logic.counters
        doc["logic"] = {
            "requests": counters.requests,
            "published": counters.published,
            "held": parts.logic.held,
        }
    link = parts.cluster
    if link is not None:
        doc["cluster"] = {
            "node_id": link.node_id,
            "redis_up": link.healthy,
            "fenced": link.fence.fenced,
            "outbox": link.info.get("outbox", 0),
            "adoptions": link.counters.get("nodes_adopted", 0),
            "members": members,
        }
    return doc
