"""What a SUBSCRIBE is granted: filter checks, subscription limits, receive scopes."""

from __future__ import annotations

import logging

from mqim import mqtt as c
from mqim.acl import Identity
from mqim.broker._hub import Hub
from mqim.broker._scopes import wide_count
from mqim.broker._session import Session
from mqim.broker._settings import BrokerSettings
from mqim.broker._topics import check_filter

log = logging.getLogger("mqim.broker.connection")


def grant_subscriptions(
    *,
    hub: Hub,
    settings: BrokerSettings,
    session: Session,
    identity: Identity,
    topics: list[tuple[str, int]],
) -> tuple[list[int], list[tuple[str, int]]]:
    """Subscribe `session` to what it may have of a SUBSCRIBE's `topics` (filter, QoS).

    Returns:
        The SUBACK return codes, one per filter, and the granted (filter, QoS) pairs, whose
        retained messages are to be sent after the SUBACK.

    Raises:
        ProtocolViolation: A filter is not a valid filter; nothing of this SUBSCRIBE applies.
    """
    codes: list[int] = []
    granted: list[tuple[str, int]] = []
    # The limit is on the client's own filters: the server-managed inbox and group
    # subscriptions (a user may be in up to max_groups_per_user groups) do not count.
    managed = hub.managed_filters(identity)
    own = sum(1 for f in session.subscriptions if f not in managed)
    for topic_filter, _ in topics:
        check_filter(topic_filter, "SUBSCRIBE")  # before anything of this SUBSCRIBE applies
    for topic_filter, qos in topics:
        if topic_filter not in session.subscriptions and own >= settings.max_subscriptions_per_session:
            log.info(
                "%s: subscription limit %d reached",
                session.client_id,
                settings.max_subscriptions_per_session,
            )
            codes.append(c.SUBACK_FAILURE)
            continue
        # The filter intersected with what the identity may receive (docs/architecture.md, "Security"); a
        # shared subscription is judged by its inner filter (`$share/{group}/{filter}`).
        scope = hub.scope_compiler.compile(identity, topic_filter)
        if scope.empty:
            hub.counters.acl_denied_subscribe += 1
            codes.append(c.SUBACK_FAILURE)
            continue
        wide_limit = settings.max_wide_subscriptions_per_session
        if scope.wide and wide_count(session, besides=topic_filter) >= wide_limit:
            log.info("%s: wide subscription limit %d reached", session.client_id, wide_limit)
            hub.counters.acl_denied_subscribe += 1
            codes.append(c.SUBACK_FAILURE)
            continue
        qos = min(qos, settings.max_qos)
        if topic_filter not in session.subscriptions and topic_filter not in managed:
            own += 1
        hub.subscribe(session, topic_filter, qos, scope=scope)
        codes.append(qos)
        granted.append((topic_filter, qos))
    return codes, granted
