"""What a request handler receives and what it must look like."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mqim.logic._replies import Outbound


@dataclass(frozen=True, slots=True)
class Uplink:
    """One request from `im/v1/up/{sender}/{kind}`.

    `sender` is the `{user}` topic level: the broker's ACL lets only that user publish there,
    so it is the authenticated identity of the requester.
    """

    sender: str
    kind: str
    payload: bytes


class Handler(Protocol):
    """Handles every request of one kind from a batch, in arrival order.

    It returns the replies to publish, in order, only after everything it had to persist is
    durable. It answers a refused request with an `error` reply instead of raising; an exception
    escaping it is a bug, answered with `internal` for every request it was given.
    """

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]: ...
