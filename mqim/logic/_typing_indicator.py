"""The `typing` request: a QoS 0 notice to the peer or the group, never stored, rate limited."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from mqim._util import KeyedBuckets
from mqim.logic._conv_access import conv_target
from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.logic._membership import GroupAccess
from mqim.logic._replies import Outbound, error_reply, rejection_reply
from mqim.logic._requests import Uplink
from mqim.logic._users import UserDirectory
from mqim.logic._validate import parse_request
from mqim.protocol import (
    ErrorCode,
    GroupKind,
    InboxKind,
    TypingNotice,
    TypingRequest,
    group_topic,
    inbox_topic,
)
from mqim.storage import StorageError

_log = logging.getLogger(__name__)


class TypingHandler:
    """Handles `im/v1/up/{me}/typing` `{"v":1,"conv"}`.

    Direct: `{"v":1,"conv","user":me}` on `u/{peer}/typing`; group: the same on
    `g/{group}/typing` (members only; the typist's own devices get it too and ignore it). QoS 0:
    nobody offline is told, nothing is stored. Each user has a token bucket
    (`limits.typing_per_s`, `limits.typing_burst`); a notice over the limit is dropped and
    answered with one `rate_limited` error per batch. Notices of one user in one conversation
    within a batch count once.

    Args:
        users: Account look-ups (the peer of a direct conversation must exist).
        groups: Membership answers.
        limits: Request and rate limits.
        monotonic: Time source for the rate limiter, in seconds.
    """

    def __init__(
        self,
        *,
        users: UserDirectory,
        groups: GroupAccess,
        limits: LogicLimits,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = users
        self._groups = groups
        self._limits = limits
        self._monotonic = monotonic
        self._rate: KeyedBuckets[str] = KeyedBuckets(
            rate=limits.typing_per_s, burst=limits.typing_burst, max_keys=limits.rate_table_size
        )
        self.dropped = 0

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `typing` requests of one batch; see the class docstring."""
        out: list[Outbound] = []
        seen: set[tuple[str, str]] = set()
        limited: set[str] = set()
        now = self._monotonic()
        for up in uplinks:
            try:
                request = parse_request(up.payload, TypingRequest, limits=self._limits)
            except RequestRejected as exc:
                out.append(rejection_reply(up.sender, exc))
                continue
            key = (up.sender, request.conv)
            if key in seen:
                continue
            seen.add(key)
            if not self._rate.take(up.sender, now):
                self.dropped += 1
                if up.sender not in limited:
                    limited.add(up.sender)
                    out.append(
                        error_reply(
                            up.sender,
                            ref=None,
                            code=ErrorCode.RATE_LIMITED,
                            message=f"typing notices are limited to {self._limits.typing_per_s:g}/s",
                        )
                    )
                continue
            try:
                notice = await self._notice(up.sender, request.conv)
            except RequestRejected as exc:
                out.append(error_reply(up.sender, ref=None, code=exc.code, message=exc.message))
                continue
            except StorageError:
                _log.exception("checking a typing notice of %r failed", up.sender)
                continue  # typing is best effort: nothing to retry
            if notice is not None:
                out.append(notice)
        return out

    async def _notice(self, user: str, conv: str) -> Outbound | None:
        target = await conv_target(user, conv, groups=self._groups, ref=None)
        payload = TypingNotice(conv=conv, user=user).to_json()
        if target.group is not None:
            return Outbound(group_topic(target.group, GroupKind.TYPING), payload, qos=0)
        peer = target.peer
        if peer is None or peer == user:
            return None
        account = await self._users.get(peer)
        if account is None or account.disabled:
            raise RequestRejected(f"user {peer!r} not found", code=ErrorCode.NOT_FOUND)
        return Outbound(inbox_topic(peer, InboxKind.TYPING), payload, qos=0)
