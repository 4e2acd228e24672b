"""The cluster's membership stamp: how `mqim group ...` tells running nodes to re-read.

`mqim group ...` writes the cluster's MongoDB directly; on one machine it would touch
`<data_dir>/membership.stamp`, but cluster nodes share no directory. They share Redis: the
command increments `{prefix}:membership:stamp` and every node's `MembershipFollower` polls that
key (one GET a second) and re-reads the memberships when it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from mqim.server._follower import StampSource


def membership_stamp_key(prefix: str) -> str:
    """The Redis key of the cluster's membership stamp."""
    return f"{prefix}:membership:stamp"


def redis_stamp_source(client: Callable[[], aioredis.Redis], *, prefix: str) -> StampSource:
    """A follower's `stamp_source` reading the membership stamp through `client()`.

    Errors answer None (nothing seen): the follower then tries again at its next poll, and the
    node's cluster link reports Redis being down.
    """
    key = membership_stamp_key(prefix)

    async def read() -> object:
        try:
            return await client().get(key)
        except (RedisError, OSError):
            return None

    return read
