"""IM request helpers for the end-to-end tests: commands, sync paging, conversation ids."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.support.mqtt import Paho, Received

_ids = itertools.count(1)


def dm(a: str, b: str) -> str:
    """The direct conversation id of `a` and `b`."""
    return f"d:{min(a, b)}:{max(a, b)}"


async def request(
    client: Paho, user: str, kind: str, body: dict[str, Any], /, *, reply: str
) -> dict[str, Any]:
    """Publish `body` (given a fresh `id`) on `up/{user}/{kind}`; return the `reply` payload with that ref.

    Other messages arriving meanwhile are dropped.
    """
    ref = f"{kind}-{next(_ids)}"
    await client.publish(f"im/v1/up/{user}/{kind}", {"v": 1, "id": ref, **body})
    for _ in range(200):
        msg = await client.receive_on(f"/{reply}")
        payload = msg.json()
        if payload.get("ref") == ref:
            return dict(payload)
    raise AssertionError(f"no {reply} for {ref}")


async def cmd(client: Paho, me: str, op: str, /, **fields: Any) -> dict[str, Any]:
    """Run a `cmd` op; return the whole reply (`ok`, `result` or `error`)."""
    return await request(client, me, "cmd", {"op": op, **fields}, reply="cmd")


async def cmd_ok(client: Paho, me: str, op: str, /, **fields: Any) -> dict[str, Any]:
    """Run a `cmd` op that must succeed; return its `result`."""
    reply = await cmd(client, me, op, **fields)
    assert reply["ok"], reply
    return dict(reply["result"])


async def sync_all(
    client: Paho, user: str, since: dict[str, int] | None = None, *, max_pages: int = 100
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Follow sync pages to the end: (conv -> last state entry, every message in arrival order)."""
    seen = dict(since or {})
    states: dict[str, dict[str, Any]] = {}
    messages: list[dict[str, Any]] = []
    body: dict[str, Any] = {"since": seen} if since is not None else {}
    for _ in range(max_pages):
        page = await request(client, user, "sync", body, reply="sync")
        for entry in page["convs"]:
            states[entry["conv"]] = entry
            messages.extend(entry["messages"])
            if entry["messages"]:
                seen[entry["conv"]] = entry["messages"][-1]["seq"]
        if not page["more"]:
            return states, messages
        body = {"since": dict(seen), "from_conv": page["next_conv"]}
    raise AssertionError("sync did not end")


async def collect(client: Paho, suffix: str, count: int, *, timeout: float = 10.0) -> list[Received]:
    """The next `count` messages on topics ending with `suffix` (others dropped)."""
    async with asyncio.timeout(timeout + 1):
        return [await client.receive_on(suffix, timeout=timeout) for _ in range(count)]
