"""A client's will: published once when its connection ends abnormally (MQTT-3.1.2-8).

A Mosquitto bridge's will is its `$SYS/broker/connection/{name}/state` notice ("0": gone), which
is recorded as bridge status instead of being routed; any other `$SYS` will is dropped.
"""

from __future__ import annotations

from mqim.broker._connection import MqttConnection
from mqim.broker._counting import count_event
from mqim.broker._hub import Hub
from mqim.broker._notices import BridgeStatus, bridge_notice_name
from mqim.broker._retained_quota import account_of


def publish_will(conn: MqttConnection, *, hub: Hub, bridges: BridgeStatus) -> None:
    """Publish a connection's will once (abnormal close, keepalive expiry, takeover)."""
    connect = conn.connect
    session = conn.session
    if connect is None or connect.will_topic is None or connect.will_payload is None:
        return
    topic, payload, qos, retain = (
        connect.will_topic,
        connect.will_payload,
        connect.will_qos,
        connect.will_retain,
    )
    connect.will_topic = None
    notice = bridge_notice_name(topic)
    if notice is not None:
        # A bridge's `$SYS/.../state` will ("0": gone) is status, not a message to route.
        if session is not None and session.is_bridge:
            bridges.record(notice, payload, session.client_id)
        return
    if topic == "$SYS" or topic.startswith("$SYS/"):
        count_event(hub.counters, "sys_publish_dropped")  # the server's own topics: never from a client
        return
    if retain:
        hub.retain(topic, payload, qos, by=account_of(session.identity if session is not None else None))
    if hub.route(topic, payload, qos, origin=session, retain=retain) or retain:
        hub.committer.kick()
