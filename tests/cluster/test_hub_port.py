"""`Hub` and its `ClusterPort` (pure, no Redis): what the hub asks the cluster, and the take-over
and hand-over methods the cluster link calls instead of editing the hub's sessions and index."""

from __future__ import annotations

import pytest

from mqim.acl import AclEngine, Identity, MembershipIndex, parse_rule
from mqim.broker import BrokerSettings, ClusterPort, Hub, Session
from mqim.storage import QueuedMessage, StoredSession


class FakeCluster:
    """Records the hub's calls; answers as told."""

    def __init__(self) -> None:
        self.forwards: list[tuple[str, bytes, int, bool]] = []
        self.filters: list[tuple[str, bool]] = []
        self.claims: list[tuple[str, bool]] = []
        self.shares: list[tuple[str, bool]] = []
        self.durable = False
        self.claimable = True
        self.local = True

    def forward(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        self.forwards.append((topic, payload, qos, retain))
        return self.durable

    async def claim(self, client_id: str, clean: bool) -> bool:
        self.claims.append((client_id, clean))
        return self.claimable

    def filter_changed(self, topic_filter: str, present: bool) -> None:
        self.filters.append((topic_filter, present))

    def take_local(self, share_filter: str, local_ready: bool) -> bool:
        self.shares.append((share_filter, local_ready))
        return self.local


class Socket:
    writable = True

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.evicted: list[tuple[str, bool]] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def evict(self, reason: str, *, will: bool = False) -> None:
        self.evicted.append((reason, will))


def make_hub() -> Hub:
    acl = AclEngine(
        rules=[parse_rule("allow all publish,subscribe,receive t/#")], membership=MembershipIndex()
    )
    return Hub(settings=BrokerSettings(), acl=acl, store=None)


def joined(hub: Hub, client_id: str, *, persistent: bool = True) -> tuple[Session, Socket]:
    session, _ = hub.open_session(
        client_id=client_id, identity=Identity(user=client_id, client_id=client_id), clean=not persistent
    )
    sock = Socket()
    hub.connected(session, sock)
    return session, sock


def test_the_port_is_attached_once_and_hears_filters_and_local_publishes() -> None:
    hub, cluster = make_hub(), FakeCluster()
    port: ClusterPort = cluster
    hub.attach_cluster(port)
    with pytest.raises(RuntimeError):
        hub.attach_cluster(port)
    session, _ = joined(hub, "a")
    hub.subscribe(session, "t/x", 1)
    hub.subscribe(session, "t/x", 0)  # the same filter again: no second report
    hub.unsubscribe(session, "t/x")
    assert cluster.filters == [("t/x", True), ("t/x", False)]
    assert hub.route("t/y", b"p", 1, retain=True) is False
    assert hub.route("t/y", b"again", 1, forwarded=True) is False  # from another node: not sent on
    assert cluster.forwards == [("t/y", b"p", 1, True)]
    cluster.durable = True
    assert hub.route("t/y", b"q", 1) is True  # a durable forward holds the acknowledgement too


async def test_claims_go_to_the_port_and_pass_without_one() -> None:
    hub, cluster = make_hub(), FakeCluster()
    assert await hub.claim_session("a", False) is True
    hub.attach_cluster(cluster)
    cluster.claimable = False
    assert await hub.claim_session("a", True) is False
    assert cluster.claims == [("a", True)]


def test_the_port_chooses_the_node_of_a_share_group() -> None:
    hub, cluster = make_hub(), FakeCluster()
    hub.attach_cluster(cluster)
    worker, _ = joined(hub, "w")
    hub.subscribe(worker, "$share/g/t/+", 1)
    cluster.local = False
    hub.route("t/a", b"elsewhere", 1)
    cluster.local = True
    hub.route("t/a", b"here", 1)
    assert cluster.shares == [("$share/g/t/+", True), ("$share/g/t/+", True)]
    assert len(worker.queue) == 1


def test_hand_over_forgets_the_session_and_its_routes_only_in_memory() -> None:
    hub, cluster = make_hub(), FakeCluster()
    hub.attach_cluster(cluster)
    session, sock = joined(hub, "a")
    hub.subscribe(session, "t/a", 1)
    assert hub.evict(session, "taken over", will=True) is True
    assert sock.evicted == [("taken over", True)]
    assert hub.hand_over(session) is True
    assert "a" not in hub.sessions
    assert hub.index.match("t/a") == {}
    assert cluster.filters[-1] == ("t/a", False)
    assert session.subscriptions == {"t/a": 1}  # the state moves with the session, not dropped
    assert hub.hand_over(session) is False  # not this hub's any more
    session.conn = None
    assert hub.evict(session, "gone") is False


def test_hidden_sessions_sit_out_routing_and_share_choices() -> None:
    hub = make_hub()
    a, _ = joined(hub, "a")
    b, _ = joined(hub, "b")
    for session in (a, b):
        hub.subscribe(session, "t/plain", 1)
        hub.subscribe(session, "$share/g/t/shared", 1)
    hidden = hub.hide_sessions(["a", "nobody"])
    assert hidden == [a]
    for _ in range(2):
        hub.route("t/shared", b"s", 1)
    hub.route("t/plain", b"p", 1)
    hub.unhide_sessions(hidden)
    assert hub.sessions["a"] is a
    assert (len(a.queue), len(b.queue)) == (0, 3)  # both share messages went to the other member


def test_take_over_loads_only_the_sessions_missing_here() -> None:
    hub = make_hub()
    present, _ = joined(hub, "a")
    stored = [
        StoredSession(client_id="a", user="a", subscriptions={"t/old": 1}, disconnected_ts=None, queue=[]),
        StoredSession(
            client_id="b",
            user="b",
            subscriptions={"t/b": 1},
            disconnected_ts=1,
            queue=[QueuedMessage(qid=3, topic="t/b", payload=b"q", qos=1)],
        ),
    ]
    assert hub.take_over(stored) == 1
    assert hub.sessions["a"] is present
    assert hub.sessions["b"].persistent
    assert list(hub.sessions["b"].queue) == [3]
    assert hub.index.match("t/b") == {"b": 1}
    assert hub.take_over(stored) == 0
