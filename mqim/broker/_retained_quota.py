"""Who may keep how many retained topics: clients within their limits, the server apart.

Retained messages are what clients can make grow, so they are bounded twice: all clients
together (`max_retained`) and each account (`max_retained_per_account`, so one device or bridge
cannot fill the store for a fleet). What the server itself retains (every account's presence,
one topic per user, and `$SYS`) is counted apart against `max_server_retained`: presence must
work for every account whatever clients retain.

Owners: an account id, `""` for a client without one (anonymous), or `SERVER`. Retained
messages loaded from storage or forwarded by another cluster node carry no owner; `owner_of`
gives them one from their topic (the server's topics are known; the rest count as clients'
without an account, against `max_retained` only).
"""

from __future__ import annotations

from typing import Final

from mqim.acl import Identity
from mqim.protocol import PREFIX

SERVER: Final = None
"""The owner of what the broker itself retains."""

BY_TOPIC: Final = "\x00"
"""Owner not known: classify by topic (never a valid account id)."""

_SERVER_PREFIXES: Final = (f"{PREFIX}/presence/", "$SYS/")


def account_of(identity: Identity | None) -> str:
    """The account a client's retained messages count against ("" without one)."""
    return (identity.user or "") if identity is not None else ""


def owner_of(topic: str) -> str | None:
    """The owner of a retained topic whose setter is unknown: the server's, or an unattributed client's."""
    return SERVER if topic.startswith(_SERVER_PREFIXES) else ""


class RetainedQuota:
    """Counts of retained topics by owner, and the admission of a new one.

    Args:
        max_client: Retained topics all clients together may keep.
        max_per_account: Retained topics one account may keep.
        max_server: Retained topics the server may keep (presence of every account, `$SYS`).
    """

    __slots__ = (
        "_clients",
        "_max_client",
        "_max_per_account",
        "_max_server",
        "_owner",
        "_per_account",
        "_server",
    )

    def __init__(self, *, max_client: int, max_per_account: int, max_server: int) -> None:
        self._max_client = max_client
        self._max_per_account = max_per_account
        self._max_server = max_server
        self._owner: dict[str, str | None] = {}
        self._per_account: dict[str, int] = {}
        self._clients = 0
        self._server = 0

    @property
    def clients(self) -> int:
        """Retained topics set by clients."""
        return self._clients

    @property
    def server(self) -> int:
        """Retained topics set by the server."""
        return self._server

    def of_account(self, account: str) -> int:
        """Retained topics `account` keeps."""
        return self._per_account.get(account, 0)

    def refusal(self, topic: str, owner: str | None) -> str | None:
        """Why `owner` may not retain `topic` now (the limit reached), or None when it may."""
        if owner == BY_TOPIC:
            owner = owner_of(topic)
        known = topic in self._owner
        previous = self._owner.get(topic, "")
        if owner is SERVER:
            if not (known and previous is SERVER) and self._server >= self._max_server:
                return f"max_server_retained={self._max_server} reached"
            return None
        if not (known and previous is not SERVER) and self._clients >= self._max_client:
            return f"max_retained={self._max_client} reached"
        if owner and previous != owner and self._per_account.get(owner, 0) >= self._max_per_account:
            return f"max_retained_per_account={self._max_per_account} reached by {owner!r}"
        return None

    def set(self, topic: str, owner: str | None) -> None:
        """Record that `owner` now holds `topic` (after `refusal` said None)."""
        if owner == BY_TOPIC:
            owner = owner_of(topic)
        self.clear(topic)
        self._owner[topic] = owner
        if owner is SERVER:
            self._server += 1
            return
        self._clients += 1
        if owner:
            self._per_account[owner] = self._per_account.get(owner, 0) + 1

    def clear(self, topic: str) -> None:
        """Forget `topic` (cleared, or about to be set again)."""
        if topic not in self._owner:
            return
        owner = self._owner.pop(topic)
        if owner is SERVER:
            self._server -= 1
            return
        self._clients -= 1
        if owner:
            left = self._per_account[owner] - 1
            if left:
                self._per_account[owner] = left
            else:
                del self._per_account[owner]
