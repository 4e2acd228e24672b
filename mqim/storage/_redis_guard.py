"""One batch of session writes, applied by Redis only while a guard key exists.

A cluster node's session writes are queued and sent later by the store's writer task. A node
that is paused (SIGSTOP, a long GC, a VM freeze) past its heartbeat's TTL is adopted by another
node, which loads the sessions from Redis and writes them from then on; when the paused node
resumes, its writer may send what it had queued before it notices that it is fenced
(`cluster/_fence.py`). Those stale writes must not reach the adopter's sessions: a queue entry
removed by its stale acknowledgement (the adopter reuses queue ids) is a message lost.

So the batch runs as one Lua script that first checks, inside Redis and atomically with the
writes, that the node's heartbeat key still exists. Once it has expired the whole batch is
refused; the node fences and rejoins under a new key, and its old queued writes are dropped
before that (`RedisSessionStore.discard_writes`). Like MULTI/EXEC, the script is atomic and
does not roll back a command that fails: each command's error is returned in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis

from mqim.storage._redis_codec import MAX_COMMAND_ARGS, Command

# ARGV holds the commands one after the other, each as its argument count then its arguments.
# The reply is {1, e1, e2, ...} (ei '' or the error of command i), or {0} when KEYS[1] is gone.
_SCRIPT: Final = """
if #KEYS > 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  return {0}
end
local out = {1}
local i = 1
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  local reply = redis.pcall(unpack(ARGV, i + 1, i + argc))
  if type(reply) == 'table' and reply.err then
    out[#out + 1] = reply.err
  else
    out[#out + 1] = ''
  end
  i = i + argc + 1
end
return out
"""


class GuardGone(Exception):
    """The guard key does not exist: Redis applied none of the batch."""


class GuardedBatch:
    """Applies batches of commands through one registered script.

    Args:
        client: The store's Redis client.
        guard_key: The key that must exist for a batch to be applied; None applies every batch.
    """

    def __init__(self, *, client: aioredis.Redis, guard_key: str | None) -> None:
        self._script = client.register_script(_SCRIPT)
        self._keys = [guard_key] if guard_key is not None else []

    async def apply(self, commands: Sequence[Command]) -> list[str | None]:
        """Run `commands` atomically; each one's error message in its place, None for success.

        Raises:
            GuardGone: The guard key does not exist; nothing was applied.
            ValueError: A command has more than `MAX_COMMAND_ARGS` arguments.
            redis.exceptions.RedisError: Redis could not be reached or refused the script.
        """
        args: list[Any] = []
        for command in commands:
            if len(command) > MAX_COMMAND_ARGS:
                raise ValueError(f"{command[0]!r} with {len(command)} arguments (at most {MAX_COMMAND_ARGS})")
            args.append(len(command))
            args.extend(command)
        # The script object loads itself again after NOSCRIPT (a Redis restart flushes scripts).
        reply: Any = await self._script(keys=self._keys, args=args)
        if not reply or int(reply[0]) == 0:
            raise GuardGone(f"{self._keys[0] if self._keys else '?'} does not exist")
        return [_text(item) or None for item in reply[1:]]


def _text(item: Any) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
