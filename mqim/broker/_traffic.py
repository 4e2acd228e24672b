"""Message and byte counts by topic class and QoS, and the sampled latencies, for metrics.

`Hub.route` counts every routed message (in) and every copy handed to a session (out) with one
list-index increment each; connections add their socket bytes. `mqim.admin` and the `$SYS`
publisher read these at their own pace. Pure: no I/O.
"""

from __future__ import annotations

from mqim.protocol import PREFIX
from mqim.stats import LatencyHistogram

TOPIC_CLASSES = ("up", "u", "g", "presence", "other")
"""Topic classes: `im/v1/up/...`, `im/v1/u/...`, `im/v1/g/...`, `im/v1/presence/...`, the rest."""

_V1 = PREFIX + "/"
_V1_LEN = len(_V1)
_OFFSETS = {"up/": 0, "u/": 3, "g/": 6}
_PRESENCE = 9
_OTHER = 12


def class_offset(topic: str) -> int:
    """3 x the index of `topic`'s class in `TOPIC_CLASSES` (add the QoS for a counter slot)."""
    if not topic.startswith(_V1):
        return _OTHER
    rest = topic[_V1_LEN : _V1_LEN + 3]
    offset = _OFFSETS.get(rest)
    if offset is None:
        offset = _OFFSETS.get(rest[:2])
    if offset is not None:
        return offset
    return _PRESENCE if topic.startswith("presence/", _V1_LEN) else _OTHER


class Traffic:
    """Counters of one broker node (monotonic, since start)."""

    __slots__ = ("bytes_received", "bytes_sent", "durable_latency", "messages_in", "messages_out")

    def __init__(self) -> None:
        # Slot `class_offset(topic) + qos`: classes in `TOPIC_CLASSES` order, QoS 0..2 within.
        self.messages_in = [0] * (3 * len(TOPIC_CLASSES))
        self.messages_out = [0] * (3 * len(TOPIC_CLASSES))
        self.bytes_received = 0
        self.bytes_sent = 0
        # PUBLISH received to its hold settled (the uplink is durable: its PUBACK may leave).
        self.durable_latency = LatencyHistogram()

    def received(self, topic: str, qos: int) -> int:
        """Count a routed message; returns its class offset for `messages_out` slots."""
        offset = class_offset(topic)
        self.messages_in[offset + qos] += 1
        return offset

    @staticmethod
    def by_class(counts: list[int]) -> dict[tuple[str, int], int]:
        """`messages_in` or `messages_out` keyed by (class, QoS)."""
        return {(name, qos): counts[3 * i + qos] for i, name in enumerate(TOPIC_CLASSES) for qos in range(3)}
