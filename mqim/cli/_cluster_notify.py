"""Telling running cluster nodes that memberships changed in MongoDB behind their back.

`mqim group ...` writes the cluster's MongoDB directly; on one machine it would touch
`<data_dir>/membership.stamp`, but cluster nodes share no directory. They share Redis: the
command increments `{prefix}:membership:stamp` and every node's `MembershipFollower` polls that
key (one GET a second) and re-reads the memberships when it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from mqim.cli._exceptions import CliError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from mqim.logic._follower import StampSource

_TIMEOUT_S = 5.0


def membership_stamp_key(prefix: str) -> str:
    """The Redis key of the cluster's membership stamp."""
    return f"{prefix}:membership:stamp"


async def bump_membership_stamp(url: str, *, prefix: str) -> None:
    """Increment the membership stamp: the running nodes re-read the memberships within a second.

    Raises:
        CliError: Redis cannot be reached or refuses the command.
    """
    import redis.asyncio as aioredis

    from mqim.cli._common import redact_url

    try:
        client = aioredis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)
    except ValueError as exc:
        raise CliError(f"bad Redis URL {redact_url(url)}: {exc}") from exc
    try:
        await client.incr(membership_stamp_key(prefix))
    except (RedisError, OSError) as exc:
        raise CliError(f"cannot reach Redis at {redact_url(url)}: {exc}") from exc
    finally:
        await client.aclose()


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
