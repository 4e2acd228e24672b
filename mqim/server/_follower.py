"""Keeping a broker's `MembershipIndex` in step with storage.

The index answers the ACL (who may read `g/{group}/#`, whose presence) and drives the broker's
server-managed subscriptions. It is loaded from storage at start-up (`load_membership`). After
that it changes in three ways:

1. Embedded logic service: the service updates the shared index itself after every change it
   stores (see `GroupAccess`); nothing to follow.
2. Standalone `mqim logic` workers (another process): the broker cannot share their memory, so
   it follows what they publish anyway. Every group change is announced on
   `im/v1/g/{group}/event` (only services may publish there): the follower applies the change
   the event names at once (synchronously, inside the broker's routing, so a removed member
   receives nothing routed after the event), then re-reads that group from storage to be exact
   (roles, lists too long for an event). A new direct conversation shows as an ack with seq 1
   on `im/v1/u/{user}/ack`; the follower registers that contact.
3. Administrators (`mqim group ...`) write storage directly from another process, then touch
   `<data_dir>/membership.stamp`; the follower polls its modification time (every `poll_s`) and
   then re-reads every membership. A cluster node has no shared directory: it polls a
   `stamp_source` instead (a counter in the cluster's Redis that `mqim group` increments).

Cluster nodes (`cluster_contacts=True`): a first-message ack reaches only the nodes that route
it (the publisher's and the sender's), but every node must know the contact (the other user's
presence permission is checked on the node that user is connected to, now or later). So a node
that sees one announces the pair on `CONTACT_EVENTS`, which every node routes and follows.

A re-read never overwrites a newer change: if the index changed while storage was being read,
the read is discarded and done again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from mqim._ports import BrokerPort
from mqim._util import raise_if_cancelling, worth_logging
from mqim.acl import MembershipIndex
from mqim.protocol import PREFIX, InvalidId, is_valid_id, parse_conv
from mqim.storage import Storage, StorageError

_log = logging.getLogger(__name__)

STAMP_NAME = "membership.stamp"
"""File in the data directory that administrative commands touch after changing memberships."""

GROUP_EVENTS = f"{PREFIX}/g/+/event"
ACKS = f"{PREFIX}/u/+/ack"

CONTACT_EVENTS = "$mqim/cluster/contacts"
"""Where cluster nodes announce new direct contacts, `{"v": 1, "contacts": [[a, b], ...]}`.
Published by the broker itself: a `$` topic is outside every client grant but an admin's."""

StampSource = Callable[[], Awaitable[object]]
"""Reads a stamp that changes whenever memberships changed in storage; None when unknown."""

_MAX_ANNOUNCE = 100_000
"""Contacts waiting to be announced; beyond it new ones are dropped (logged): the nodes that miss
them learn them at their next restart or full re-read."""

_ANNOUNCE_BATCH = 500
"""Contacts per announcement message."""

_RETRIES = 5
"""Re-reads of one snapshot when the index keeps changing underneath, before applying anyway."""

_MAX_PENDING_GROUPS = 100_000
"""Groups waiting for a re-read; beyond it one full re-read replaces them."""


def touch_membership_stamp(data_dir: Path) -> None:
    """Tell a server running on `data_dir` that memberships changed in storage."""
    path = data_dir / STAMP_NAME
    path.touch()
    os.utime(path, ns=(time.time_ns(), time.time_ns()))


@dataclass(slots=True)
class Snapshot:
    """Memberships as storage holds them."""

    groups: dict[str, set[str]] = field(default_factory=dict)
    contacts: set[tuple[str, str]] = field(default_factory=set)
    users: list[str] = field(default_factory=list)


async def read_memberships(storage: Storage) -> Snapshot:
    """Every group's members and every direct contact, from the conversations of every account."""
    snapshot = Snapshot()
    for account in await storage.list_users():
        user = account.user_id
        snapshot.users.append(user)
        for state in await storage.conv_states(user):
            try:
                kind, ids = parse_conv(state.conv)
            except InvalidId:
                continue
            if kind == "g":
                snapshot.groups.setdefault(ids[0], set()).add(user)
            elif ids[0] != ids[1]:
                snapshot.contacts.add((ids[0], ids[1]))
    return snapshot


def apply_snapshot(index: MembershipIndex, snapshot: Snapshot) -> None:
    """Make `index` answer as `snapshot` (groups replaced, gone ones dropped, contacts added)."""
    known = {group for user in snapshot.users for group in index.groups_of(user)}
    for group in sorted(known - set(snapshot.groups)):
        index.drop_group(group)
    for group, members in snapshot.groups.items():
        index.set_group(group, members)
    for a, b in snapshot.contacts:
        index.add_contact(a, b)


async def load_membership(storage: Storage, index: MembershipIndex) -> Snapshot:
    """Fill `index` from storage (at start-up, before clients connect)."""
    snapshot = await read_memberships(storage)
    apply_snapshot(index, snapshot)
    _log.info(
        "membership loaded: %d groups, %d direct contacts, %d accounts",
        len(snapshot.groups),
        len(snapshot.contacts),
        len(snapshot.users),
    )
    return snapshot


def group_event_delta(payload: bytes) -> tuple[set[str], set[str]]:
    """`(joined, left)` users named by a group event payload (empty when it names none). Pure."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return set(), set()
    if not isinstance(body, dict):
        return set(), set()
    members = body.get("members")
    listed = members if isinstance(members, list) else []
    named = {m for m in listed if isinstance(m, str) and is_valid_id(m)}
    kind = body.get("type")
    if kind == "group.create":
        by = body.get("by")
        if isinstance(by, str) and is_valid_id(by):
            named.add(by)
        return named, set()
    if kind == "group.add":
        return named, set()
    if kind in ("group.remove", "group.leave"):
        return set(), named
    return set(), set()


def first_contact(payload: bytes) -> tuple[str, str] | None:
    """The two users of a direct conversation whose first message an ack payload acknowledges. Pure."""
    if b'"seq":1' not in payload:
        return None  # cheap filter: nearly every ack is not a first message
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("seq") != 1 or not isinstance(body.get("conv"), str):
        return None
    try:
        kind, ids = parse_conv(body["conv"])
    except InvalidId:
        return None
    if kind != "d" or ids[0] == ids[1]:
        return None
    return ids[0], ids[1]


def contact_event_pairs(payload: bytes) -> list[tuple[str, str]]:
    """The valid pairs of two distinct users a `CONTACT_EVENTS` payload names. Pure."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return []
    listed = body.get("contacts") if isinstance(body, dict) else None
    if not isinstance(listed, list):
        return []
    pairs = []
    for item in listed[:_ANNOUNCE_BATCH]:
        if (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(user, str) and is_valid_id(user) for user in item)
            and item[0] != item[1]
        ):
            pairs.append((item[0], item[1]))
    return pairs


class MembershipFollower:
    """Follows membership changes made outside this process (see the module docstring).

    Use as an async context manager (attaches to the broker port), and run `run()` in a task
    owned by the server.

    Args:
        storage: The source of truth.
        index: The broker's index.
        stamp: The stamp file to poll (`<data_dir>/membership.stamp`), or None.
        port: The broker port to follow group events and acks on (standalone logic), or None.
        poll_s: How often the stamp is checked, in seconds.
        stamp_source: Another stamp to poll (a cluster node's), or None; errors must be
            answered with None (no change seen), not raised.
        cluster_contacts: Announce new direct contacts on `CONTACT_EVENTS` and follow the other
            nodes' announcements (needs `port`; the cluster must route the topic to every node).
    """

    def __init__(
        self,
        *,
        storage: Storage,
        index: MembershipIndex,
        stamp: Path | None,
        port: BrokerPort | None,
        poll_s: float = 1.0,
        stamp_source: StampSource | None = None,
        cluster_contacts: bool = False,
    ) -> None:
        self._storage = storage
        self._index = index
        self._stamp = stamp
        self._port = port
        self._poll_s = poll_s
        self._stamp_seen = self._stamp_time()
        self._source = stamp_source
        self._source_seen: object = None
        self._cluster_contacts = cluster_contacts and port is not None
        self._announce: dict[tuple[str, str], None] = {}
        self.contacts_dropped = 0
        self._pending: set[str] = set()
        self._full = False
        self._wake = asyncio.Event()
        self._generation = 0
        self._detach: list[Callable[[], None]] = []
        self.reloads = 0

    async def __aenter__(self) -> MembershipFollower:
        if self._source is not None:
            self._source_seen = await self._source()
        self._index.add_listener(self._changed)
        if self._port is not None:
            self._detach.append(self._port.attach_listener(GROUP_EVENTS, self._on_group_event))
            self._detach.append(self._port.attach_listener(ACKS, self._on_ack))
            if self._cluster_contacts:
                self._detach.append(self._port.attach_listener(CONTACT_EVENTS, self._on_contacts))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for detach in self._detach:
            detach()
        self._detach.clear()
        self._index.remove_listener(self._changed)

    async def run(self) -> None:
        """Apply queued re-reads and poll the stamp until cancelled; failures are logged and retried."""
        while True:
            try:
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            raise_if_cancelling()
            self._wake.clear()
            self._send_announcements()
            stamp = self._stamp_time()
            if stamp != self._stamp_seen:
                self._stamp_seen = stamp
                self._full = True
            if self._source is not None:
                seen = await self._source()
                # A Redis client may drop a cancellation that arrives as its read completes.
                raise_if_cancelling()
                if seen is not None and seen != self._source_seen:
                    self._source_seen = seen
                    self._full = True
            try:
                await self.catch_up()
            except StorageError:
                _log.exception("re-reading memberships failed; retrying in %.1f s", self._poll_s)
            raise_if_cancelling()

    async def catch_up(self) -> None:
        """Do the queued re-reads now."""
        if self._full:
            self._full = False
            self._pending.clear()
            await self.reload_all()
        while self._pending:
            group = min(self._pending)
            self._pending.discard(group)
            await self._reload_group(group)

    # -- broker port listeners (synchronous, inside the broker's routing) ----------------------
    def _on_group_event(self, topic: str, payload: bytes) -> None:
        group = topic.split("/")[3]
        if not is_valid_id(group):
            return
        joined, left = group_event_delta(payload)
        if joined or left:
            members = (set(self._index.members_of(group)) | joined) - left
            self._apply(lambda: self._index.set_group(group, members))
        if len(self._pending) >= _MAX_PENDING_GROUPS:
            self._full = True
        else:
            self._pending.add(group)
        self._wake.set()

    def _on_ack(self, topic: str, payload: bytes) -> None:
        pair = first_contact(payload)
        if pair is None:
            return
        self._apply(lambda: self._index.add_contact(*pair))
        if not self._cluster_contacts:
            return
        # Announced from the follower's task: publishing here would re-enter the routing.
        if len(self._announce) < _MAX_ANNOUNCE:
            self._announce[pair] = None
            self._wake.set()
        else:
            self.contacts_dropped += 1
            if worth_logging(self.contacts_dropped):
                _log.warning(
                    "%d new contacts not announced to the cluster (queue full)", self.contacts_dropped
                )

    def _on_contacts(self, topic: str, payload: bytes) -> None:
        pairs = contact_event_pairs(payload)
        if pairs:
            self._apply(lambda: self._add_contacts(pairs))

    def _add_contacts(self, pairs: list[tuple[str, str]]) -> None:
        for a, b in pairs:
            self._index.add_contact(a, b)

    def _send_announcements(self) -> None:
        if not self._announce or self._port is None:
            return
        pairs, self._announce = list(self._announce), {}
        for start in range(0, len(pairs), _ANNOUNCE_BATCH):
            chunk = pairs[start : start + _ANNOUNCE_BATCH]
            body = json.dumps({"v": 1, "contacts": [list(pair) for pair in chunk]}).encode()
            self._port.publish_local(CONTACT_EVENTS, body, qos=1)

    # -- internals -----------------------------------------------------------------------------
    def _changed(self, users: frozenset[str]) -> None:
        self._generation += 1

    def _apply(self, change: Callable[[], None]) -> None:
        try:
            change()
        except ExceptionGroup:
            # The index is updated; a failing listener is a bug for the log, not for the router.
            _log.exception("membership listeners failed")

    async def reload_all(self) -> None:
        """Re-read every membership from storage now (see the module docstring)."""
        for _ in range(_RETRIES):
            generation = self._generation
            snapshot = await read_memberships(self._storage)
            if generation == self._generation:
                break
        self._apply(lambda: apply_snapshot(self._index, snapshot))
        self.reloads += 1
        _log.info("memberships re-read: %d groups", len(snapshot.groups))

    async def _reload_group(self, group: str) -> None:
        for _ in range(_RETRIES):
            generation = self._generation
            record = await self._storage.get_group(group)
            if generation == self._generation:
                break
        members = set(record.members) if record is not None else set()
        self._apply(lambda: self._index.set_group(group, members))
        self.reloads += 1

    def _stamp_time(self) -> int | None:
        if self._stamp is None:
            return None
        try:
            return self._stamp.stat().st_mtime_ns
        except OSError:
            return None
