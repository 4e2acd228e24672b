"""The Prometheus collector: every metric read at scrape time from what the components keep.

Nothing here runs on the hot path. The broker, the logic service, the password method, the
bridges and the cluster link keep plain counters (`Hub.counters`, `Hub.traffic`,
`LogicService.counters`, `PasswordCheckStats`, `BridgeService.status()`, `ClusterLink.counters`);
`MqimCollector.collect` turns them into metric families on the scraping request, on the event
loop (the sessions are the loop's). Names follow Prometheus conventions: `mqim_` prefix, base
units (seconds, bytes), `_total` on counters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from mqim.admin._sources import NodeParts
from mqim.broker import Traffic
from mqim.stats import LatencyHistogram

Metric = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily

# `Hub.counters.extra` names that are refused publishes, and the reason label they get.
_REFUSED_EXTRA = {
    "rate_limited": "rate_limited",
    "too_large": "too_large",
    "no_consumer": "no_consumer",
    "sys_publish_dropped": "sys_topic",
}
_RATE_LIMIT_EXTRA = {
    "rate_limited": "publish",
    "connect_rate_refused": "connect",
    "connections_per_user_refused": "connections_per_user",
}


@dataclasses.dataclass(slots=True)
class ClusterNodes:
    """What the last look at the cluster registry found (refreshed before each scrape)."""

    registered: int = 0
    alive: int = 0


class MqimCollector(Collector):
    """Yields mqim's metrics for one node.

    Args:
        parts: The node's components.
        nodes: Cluster registry figures, refreshed by the endpoint before each scrape.
    """

    def __init__(self, *, parts: NodeParts, nodes: ClusterNodes | None = None) -> None:
        self._parts = parts
        self.nodes = nodes

    def collect(self) -> Iterator[Metric]:
        yield from self._connections()
        yield from self._sessions()
        yield from self._traffic()
        yield from self._refusals()
        yield from self._auth()
        yield from self._storage()
        yield from self._logic()
        yield from self._bridges()
        yield from self._cluster()

    def _connections(self) -> Iterator[Metric]:
        broker = self._parts.broker
        gauge = GaugeMetricFamily(
            "mqim_connections",
            "Open MQTT connections by listener and account kind (none: not authenticated yet).",
            labels=["listener", "kind"],
        )
        for (listener, kind), count in sorted(broker.connection_stats().items()):
            gauge.add_metric([listener, kind], count)
        yield gauge
        counters = broker.hub.counters
        yield _counter(
            "mqim_connections_refused",
            "CONNECTs refused by a connection limit.",
            counters.connections_refused,
        )
        yield _counter(
            "mqim_protocol_errors",
            "Connections closed for an MQTT protocol violation.",
            counters.protocol_errors,
        )

    def _sessions(self) -> Iterator[Metric]:
        hub = self._parts.broker.hub
        live = persistent = offline = queued = queued_bytes = largest = subscriptions = 0
        for session in hub.sessions.values():
            subscriptions += len(session.subscriptions)
            if session.conn is not None:
                live += 1
            if session.persistent:
                persistent += 1
                if session.conn is None:
                    offline += 1
            depth = len(session.queue)
            queued += depth
            queued_bytes += session.queued_bytes
            largest = max(largest, depth)
        gauge = GaugeMetricFamily(
            "mqim_sessions",
            "MQTT sessions: live (connected), persistent (kept across connections), offline "
            "(persistent, disconnected).",
            labels=["state"],
        )
        for state, count in (("live", live), ("persistent", persistent), ("offline", offline)):
            gauge.add_metric([state], count)
        yield gauge
        yield _gauge("mqim_subscriptions", "Subscriptions held by all sessions.", subscriptions)
        yield _gauge("mqim_queue_messages", "Messages queued or in flight for all sessions.", queued)
        yield _gauge("mqim_queue_bytes", "Payload bytes queued for all sessions.", queued_bytes)
        yield _gauge("mqim_queue_largest_messages", "Messages in the longest session queue.", largest)
        counters = hub.counters
        yield _counter(
            "mqim_queue_overflow",
            "Queued messages that left a full offline queue (oldest first; the user is told to sync).",
            counters.evicted,
        )
        yield _counter(
            "mqim_queue_refused", "Messages a full logic-worker session refused.", counters.refused_full
        )
        yield _gauge("mqim_retained_messages", "Retained messages held.", len(hub.retained))
        yield _gauge(
            "mqim_held_uplinks", "Client publishes whose PUBACK waits for the logic service.", hub.held
        )

    def _traffic(self) -> Iterator[Metric]:
        hub = self._parts.broker.hub
        traffic = hub.traffic
        for direction, counts, doc in (
            ("received", traffic.messages_in, "Messages routed (from clients, the logic and other nodes)"),
            ("sent", traffic.messages_out, "Message copies handed to sessions"),
        ):
            family = CounterMetricFamily(
                f"mqim_messages_{direction}",
                f"{doc}, by topic class (up, u, g, presence, other) and QoS.",
                labels=["class", "qos"],
            )
            for (topic_class, qos), count in Traffic.by_class(counts).items():
                family.add_metric([topic_class, str(qos)], count)
            yield family
        yield _counter(
            "mqim_deliveries", "Message copies delivered or queued to sessions.", hub.counters.delivered
        )
        yield _counter("mqim_bytes_received", "MQTT bytes read from clients.", traffic.bytes_received)
        yield _counter("mqim_bytes_sent", "MQTT bytes written to clients.", traffic.bytes_sent)
        yield _histogram(
            "mqim_uplink_durable_seconds",
            "PUBLISH received to stored by every consumer (its PUBACK may leave); sampled.",
            traffic.durable_latency,
        )
        logic = self._parts.logic
        if logic is not None:
            yield _histogram(
                "mqim_publish_to_delivery_seconds",
                "Uplink received by the logic service to its messages and replies routed to the "
                "recipients' sessions; sampled.",
                logic.delivery_latency,
            )

    def _refusals(self) -> Iterator[Metric]:
        counters = self._parts.broker.hub.counters
        extra = counters.extra
        refused = CounterMetricFamily(
            "mqim_publishes_refused", "Client publishes refused, by reason.", labels=["reason"]
        )
        refused.add_metric(["forbidden"], counters.acl_denied_publish)
        refused.add_metric(["oversize"], counters.oversize_discarded)
        for name, reason in _REFUSED_EXTRA.items():
            refused.add_metric([reason], extra.get(name, 0))
        yield refused
        denied = CounterMetricFamily("mqim_acl_denials", "ACL denials, by action.", labels=["action"])
        denied.add_metric(["publish"], counters.acl_denied_publish)
        denied.add_metric(["subscribe"], counters.acl_denied_subscribe)
        denied.add_metric(["receive"], counters.acl_denied_receive)
        yield denied
        limited = CounterMetricFamily(
            "mqim_rate_limited", "Rate and count limits hit, by limit.", labels=["limit"]
        )
        for name, limit in _RATE_LIMIT_EXTRA.items():
            limited.add_metric([limit], extra.get(name, 0))
        yield limited
        events = CounterMetricFamily(
            "mqim_broker_events", "Other broker events (kicks, abuse disconnects...).", labels=["event"]
        )
        for name, count in sorted(extra.items()):
            if (
                name not in _REFUSED_EXTRA
                and name not in _RATE_LIMIT_EXTRA
                and not name.startswith("bridge_")
            ):
                events.add_metric([name], count)
        yield events

    def _auth(self) -> Iterator[Metric]:
        stats = self._parts.password_stats
        if stats is None:
            return
        failures = CounterMetricFamily(
            "mqim_auth_failures", "Refused logins, by method and reason.", labels=["method", "reason"]
        )
        failures.add_metric(["password", "bad_credentials"], stats.failures)
        failures.add_metric(["password", "backoff"], stats.backoff_refusals)
        failures.add_metric(["password", "busy"], stats.busy_refusals)
        yield failures
        checks = CounterMetricFamily("mqim_auth_checks", "Password checks run.", labels=["method"])
        checks.add_metric(["password"], stats.checks)
        yield checks

    def _storage(self) -> Iterator[Metric]:
        committer = self._parts.broker.hub.committer
        yield _counter("mqim_session_commits", "Session store commits (batched writes).", committer.committed)
        yield _counter(
            "mqim_session_commit_failures",
            "Session store commits that lost their writes (their acknowledgements were withheld).",
            committer.failures,
        )

    def _logic(self) -> Iterator[Metric]:
        logic = self._parts.logic
        if logic is None:
            return
        counters = logic.counters
        yield _counter(
            "mqim_logic_requests", "Uplink requests taken by the logic service.", counters.requests
        )
        yield _counter(
            "mqim_logic_batches",
            "Batches those requests came in (one storage write per batch for msg).",
            counters.batches,
        )
        events = CounterMetricFamily(
            "mqim_logic_events", "What the logic service did, by event.", labels=["event"]
        )
        for field in dataclasses.fields(counters):
            if field.name not in ("requests", "batches"):
                events.add_metric([field.name], getattr(counters, field.name))
        yield events
        yield _gauge("mqim_logic_held_requests", "Requests held because storage failed on them.", logic.held)

    def _bridges(self) -> Iterator[Metric]:
        bridges = self._parts.bridges
        if bridges is None:
            return
        status = bridges.status()
        families: dict[str, CounterMetricFamily] = {}
        connected = GaugeMetricFamily(
            "mqim_bridge_connected", "1 while an outbound bridge is connected.", labels=["name"]
        )
        pending = GaugeMetricFamily(
            "mqim_bridge_pending_messages", "Messages in an outbound bridge's outbox.", labels=["name"]
        )
        for kind in ("outbound", "mappings", "commands"):
            for name, stats in sorted(status.get(kind, {}).items()):
                for key, value in stats.items():
                    if key.startswith("pending_") or not _is_int(value):
                        continue
                    family = families.get(key)
                    if family is None:
                        family = families[key] = CounterMetricFamily(
                            f"mqim_bridge_{key}",
                            f"Bridge counter {key}, by bridge kind and name.",
                            labels=["kind", "name"],
                        )
                    family.add_metric([kind, name], value)
                if kind == "outbound":
                    connected.add_metric([name], int(stats.get("state") == "connected"))
                    pending.add_metric([name], int(stats.get("pending_out", 0)))
        yield from families.values()
        yield connected
        yield pending
        inbound = GaugeMetricFamily(
            "mqim_bridge_inbound_up",
            "1 while an inbound (Mosquitto) bridge says it is connected.",
            labels=["name"],
        )
        for name, state in sorted(status.get("inbound", {}).items()):
            inbound.add_metric([name], int(state.get("state") == "1"))
        yield inbound

    def _cluster(self) -> Iterator[Metric]:
        link = self._parts.cluster
        if link is None:
            return
        yield _gauge(
            "mqim_cluster_redis_up", "1 while the node reaches the cluster's Redis.", int(link.healthy)
        )
        yield _gauge(
            "mqim_cluster_fenced", "1 while the node is fenced (not serving).", int(link.fence.fenced)
        )
        events = CounterMetricFamily(
            "mqim_cluster_events", "Cluster link events (adoptions, forwards...), by event.", labels=["event"]
        )
        for name, count in sorted(link.counters.items()):
            events.add_metric([name], count)
        yield events
        yield _counter(
            "mqim_cluster_adoptions", "Dead nodes this node adopted.", link.counters.get("nodes_adopted", 0)
        )
        info = link.info
        yield _gauge("mqim_cluster_outbox", "Cluster writes waiting for Redis.", int(info.get("outbox", 0)))
        nodes = self.nodes
        if nodes is not None:
            gauge = GaugeMetricFamily(
                "mqim_cluster_nodes", "Registered cluster nodes, by state.", labels=["state"]
            )
            gauge.add_metric(["up"], nodes.alive)
            gauge.add_metric(["down"], nodes.registered - nodes.alive)
            yield gauge


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(name: str, doc: str, histogram: LatencyHistogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(bound), float(count))
        for bound, count in histogram.cumulative()
    ]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.sum_ns / 1e9)
