"""Telling running cluster nodes that memberships changed in MongoDB behind their back.

The nodes poll a counter in the cluster's Redis (`mqim/server/_stamps.py`); this increments it.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from mqim.cli._exceptions import CliError
from mqim.server import membership_stamp_key

_TIMEOUT_S = 5.0


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
