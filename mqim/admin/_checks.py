"""Readiness: listeners bound, storage writable, the cluster's Redis reachable, not fenced.

Each check is bounded by a time-out and reports `{"ok": bool, "detail": str}`; `/readyz` is 200
only when every check is ok. MongoDB reachability is the storage check in cluster mode.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mqim.admin._sources import NodeParts

CHECK_TIMEOUT_S = 2.0
"""Longest a single check may take before it counts as failed."""

PROBE_TOKEN = "mqim-readyz-probe"
"""The token id the storage probe revokes (already expired: it never refuses anyone)."""

Check = dict[str, Any]


async def readiness(parts: NodeParts, *, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Check]:
    """Every check's outcome, by name."""
    results: dict[str, Check] = {"listeners": _listeners(parts)}
    storage_name = "mongodb" if parts.storage_kind == "mongodb" else "storage"
    results[storage_name] = await _bounded(_storage(parts), timeout_s)
    link = parts.cluster
    if link is not None:
        results["redis"] = await _bounded(_redis(parts), timeout_s)
        fenced = link.fence.fenced
        results["cluster"] = {"ok": not fenced, "detail": "fenced: not serving" if fenced else "member"}
    return results


def _listeners(parts: NodeParts) -> Check:
    try:
        ports = parts.broker.listener_ports()
    except (KeyError, IndexError, AttributeError, OSError) as exc:
        return {"ok": False, "detail": f"not bound: {exc!r}"}
    bound = {name: port for name, (_, _, port) in ports.items()}
    ok = bool(bound) and all(port > 0 for port in bound.values())
    return {"ok": ok, "detail": ", ".join(f"{name}:{port}" for name, port in sorted(bound.items()))}


async def _storage(parts: NodeParts) -> Check:
    # One write and one read: a revoked token id that expired a second ago.
    node = parts.cluster.node_id if parts.cluster is not None else "local"
    token_id = f"{PROBE_TOKEN}:{node}"
    await parts.storage.revoke_token(token_id, expires_ts=int(time.time()) - 1)
    await parts.storage.is_token_revoked(token_id)
    return {"ok": True, "detail": "write and read ok"}


async def _redis(parts: NodeParts) -> Check:
    link = parts.cluster
    assert link is not None
    await link.redis.ping()
    if not link.healthy:
        return {"ok": False, "detail": "reachable again; the link has not recovered yet"}
    return {"ok": True, "detail": "ping ok"}


async def _bounded(check: Any, timeout_s: float) -> Check:
    try:
        async with asyncio.timeout(timeout_s):
            result: Check = await check
            return result
    except TimeoutError:
        return {"ok": False, "detail": f"no answer within {timeout_s:g}s"}
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # Any failure of the dependency is the answer, not an error of the endpoint.
        return {"ok": False, "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
