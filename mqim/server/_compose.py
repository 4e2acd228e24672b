"""Pieces shared by the server compositions (`EmbeddedServer`, `ClusterServer`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqim.acl import AclEngine, Identity, IdentityKind, MembershipIndex
from mqim.auth import AuthOptions, build_authenticator
from mqim.broker import BrokerSettings, Hub, Listener, MqimBroker
from mqim.logic import InProcessBus, LogicLimits, LogicService
from mqim.protocol import inbox_filter
from mqim.server._follower import MembershipFollower
from mqim.server._presence import PresenceTracker
from mqim.server._receipts import DeliveryReceipts
from mqim.storage import AccountKind, SessionStore, Storage

log = logging.getLogger("mqim.server")

DRAIN_TIMEOUT_S = 5.0
"""How long a stopping server waits for the logic service to process acknowledged uplinks."""


def default_auto_subscriptions(identity: Identity) -> Iterable[tuple[str, int]]:
    """A user's session is subscribed to its own inbox (docs/architecture.md, "IM features")."""
    if identity.kind == "user" and identity.user:
        return [(inbox_filter(identity.user), 1)]
    return []


async def account_kinds(storage: Storage) -> dict[str, IdentityKind]:
    """The kinds of the accounts that are not plain users (bridge, service), by id.

    Restored persistent sessions of such accounts keep their kind, and so their ACL.
    """
    kinds: dict[str, IdentityKind] = {}
    for record in await storage.list_users():
        if record.kind == AccountKind.BRIDGE:
            kinds[record.user_id] = "bridge"
        elif record.kind == AccountKind.SERVICE:
            kinds[record.user_id] = "service"
    return kinds


async def make_broker(
    *,
    listeners: Sequence[Listener],
    settings: BrokerSettings,
    storage: Storage,
    session_store: SessionStore,
    acl: AclEngine,
    auth: AuthOptions,
    data_dir: Path,
    allow_anonymous: bool,
    membership: MembershipIndex,
) -> MqimBroker:
    """The broker of a server composition (not started)."""
    broker = MqimBroker(
        listeners=listeners,
        settings=settings,
        authenticator=build_authenticator(
            storage=storage, options=auth, data_dir=data_dir, allow_anonymous=allow_anonymous
        ),
        acl=acl,
        session_store=session_store,
        auto_subscriptions=default_auto_subscriptions,
        storage=storage,  # stored ACL rules, roles, disabled accounts (polled)
        membership=membership,  # the server-managed g/{group}/# subscriptions
        restored_kinds=await account_kinds(storage),
    )
    return broker


async def start_embedded_logic(
    stack: contextlib.AsyncExitStack,
    tasks: asyncio.TaskGroup,
    *,
    broker: MqimBroker,
    storage: Storage,
    limits: LogicLimits,
    membership: MembershipIndex,
    name: str,
) -> LogicService:
    """Run the logic service on an in-process bus, owned by `tasks`, stopped with `stack`.

    On the way out the service first drains what the bus holds, bounded by `DRAIN_TIMEOUT_S`,
    then is cancelled; requests still unprocessed then were never acknowledged to their
    senders (PUBACK waits for the commit), so they resend them.
    """
    bus = InProcessBus(port=broker)
    logic = LogicService(storage=storage, bus=bus, limits=limits, membership=membership)
    await stack.enter_async_context(bus)
    service = tasks.create_task(logic.run(), name=name)
    stack.callback(service.cancel)
    stack.push_async_callback(_drain, bus)  # runs before the cancel above
    return logic


async def _drain(bus: InProcessBus) -> None:
    for _ in range(int(DRAIN_TIMEOUT_S / 0.01)):
        if bus.pending == 0:
            return
        await asyncio.sleep(0.01)
    log.warning("stopping with %d unprocessed requests", bus.pending)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImFeatures:
    """The IM features both servers run on the broker's events."""

    presence: PresenceTracker
    receipts: DeliveryReceipts


def attach_im_features(
    stack: contextlib.AsyncExitStack, *, hub: Hub, storage: Storage, membership: MembershipIndex
) -> ImFeatures:
    """Before the broker starts: memberships drive the server-managed group subscriptions, and
    presence and receipts observe the sessions (so restored sessions are seen too)."""
    membership.add_listener(hub.refresh_managed)
    stack.callback(membership.remove_listener, hub.refresh_managed)
    features = ImFeatures(
        presence=PresenceTracker(hub=hub), receipts=DeliveryReceipts(hub=hub, storage=storage)
    )
    hub.add_observer(features.presence)
    hub.add_observer(features.receipts)
    return features


async def start_im_features(
    stack: contextlib.AsyncExitStack, features: ImFeatures, follower: MembershipFollower
) -> None:
    """After the broker started: presence of the restored sessions, then the follower."""
    features.presence.start()
    await stack.enter_async_context(follower)


async def run_im_tasks(
    stack: contextlib.AsyncExitStack, features: ImFeatures, follower: MembershipFollower, *, suffix: str = ""
) -> asyncio.TaskGroup:
    """Run the receipts and the follower in a task group owned by `stack`; returns the group.

    On the way out the last delivered cursors are written before the tasks are cancelled.
    """
    tasks = await stack.enter_async_context(asyncio.TaskGroup())
    for name, job in (("mqim-receipts", features.receipts.run()), ("mqim-membership", follower.run())):
        stack.callback(tasks.create_task(job, name=f"{name}{suffix}").cancel)
    stack.push_async_callback(features.receipts.flush)  # runs before the cancels above
    return tasks
