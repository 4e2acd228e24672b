"""`$` topics: acknowledged, ACL-checked, matched only by filters naming them (MQTT-4.7.2-1).

A client's PUBLISH to `$TopicA/B` is routed like any other message, but only to filters whose
first level is `$TopicA` literally; one to `$SYS/...` is acknowledged, dropped and counted (the
server's own topics). Neither closes the connection.
"""

from __future__ import annotations

import pytest

from mqim.server import EmbeddedServer
from tests.broker.aioraw import PUBACK, PUBCOMP, PUBREC, PUBREL, ack
from tests.broker.conftest import RawFactory, ServerFactory, broker_of
from tests.support.mqtt import Raw

OPEN = ["allow all publish,subscribe,receive #"]
"""The Paho suite's rule: a rule's leading `#` covers `$TopicA/...` (not `$SYS`)."""


@pytest.fixture
async def open_server(make_server: ServerFactory) -> EmbeddedServer:
    return await make_server(rules=OPEN)


@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_publish_to_a_dollar_topic_is_acknowledged_and_routed_only_by_name(
    open_server: EmbeddedServer, connect_raw: RawFactory, qos: int
) -> None:
    port = open_server.port()
    everything = await connect_raw(port, f"all-{qos}")
    assert await everything.subscribe("#", 1) == 1
    assert await everything.subscribe("+/B", 1, pid=2) == 1
    named = await connect_raw(port, f"named-{qos}")
    assert await named.subscribe("$TopicA/#", 1) == 1
    pub = await connect_raw(port, f"pub-{qos}")
    pub.send(Raw.publish_packet("$TopicA/B", b"dollar", qos=qos, pid=5))
    if qos == 1:
        assert (await pub.expect(PUBACK)).pid == 5
    elif qos == 2:
        assert (await pub.expect(PUBREC)).pid == 5
        pub.send(ack(PUBREL, 5))
        assert (await pub.expect(PUBCOMP)).pid == 5
    got = await named.receive()
    assert (got.topic, got.payload) == ("$TopicA/B", b"dollar")
    await everything.nothing(0.3)  # MQTT-4.7.2-1: `#` and `+/B` never match a `$` topic
    await pub.nothing(0.1)  # and the connection stays open


async def test_publish_to_sys_is_acknowledged_dropped_and_counted(
    make_server: ServerFactory, connect_raw: RawFactory
) -> None:
    server = await make_server(rules=[*OPEN, "allow all publish,subscribe,receive $SYS/#"])
    port = server.port()
    watcher = await connect_raw(port, "sys-watch")
    assert await watcher.subscribe("$SYS/#", 0) == 0
    pub = await connect_raw(port, "sys-pub")
    before = broker_of(server).hub.counters.extra.get("sys_publish_dropped", 0)
    for pid in (1, 2):
        pub.send(Raw.publish_packet("$SYS/broker/fake", b"spoof", qos=1, pid=pid))
        assert (await pub.expect(PUBACK)).pid == pid
    await watcher.nothing(0.3)
    assert broker_of(server).hub.counters.extra["sys_publish_dropped"] == before + 2


async def test_dollar_topic_the_acl_refuses_is_acknowledged_and_dropped(
    tserver: EmbeddedServer, raw: RawFactory
) -> None:
    # GENERIC_RULES allow only `t/#`: `$x/y` is refused like any topic outside it.
    before = broker_of(tserver).hub.counters.acl_denied_publish
    pub = await raw("dollar-refused")
    pub.send(Raw.publish_packet("$x/y", b"no", qos=1, pid=3))
    assert (await pub.expect(PUBACK)).pid == 3
    assert broker_of(tserver).hub.counters.acl_denied_publish == before + 1


async def test_sys_will_is_not_published(make_server: ServerFactory, connect_raw: RawFactory) -> None:
    server = await make_server(rules=[*OPEN, "allow all publish,subscribe,receive $SYS/#"])
    port = server.port()
    watcher = await connect_raw(port, "will-watch")
    assert await watcher.subscribe("$SYS/#", 0) == 0
    dying = await connect_raw(port)
    _, rc = await dying.connect("will-sys", will=("$SYS/broker/fake", b"gone", 0, False))
    assert rc == 0
    dying.reset()
    await watcher.nothing(0.5)
