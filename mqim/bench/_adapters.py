"""How each kind of target is spoken to: client identities, topics, payloads. Pure, no I/O.

A scenario is written once; an adapter turns "publisher number n of the p2p stream" or "crowd
member i" into concrete MQTT for one kind of target:

* `PlainAdapter` (Mosquitto, stock amqtt, an external broker): a plain topic relay. The payload is
  ``{"t": <monotonic_ns>, "n": <n>}``; the run id is part of every topic.
* `ImAdapter` (mqim): the IM path (docs/architecture.md, "The wire contract"). Alice sends
  ``up/alice/msg`` requests, the server stores them and delivers ``{"conv", "seq", "data":
  {...}}`` to bob's inbox or the group topic. The timestamp, the number and the run id travel in
  ``data``, so messages left over from an earlier run (bob's session is persistent) are
  recognised and ignored.

Both processes of a measurement rebuild the same adapter from its `AdapterSpec`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from mqim.protocol import (
    GroupKind,
    InboxKind,
    UpKind,
    group_topic,
    inbox_topic,
    up_topic,
)

ClientSet = Literal["p2p-pub", "p2p-sub", "crowd", "member", "group-pub"]
"""Which clients a worker plays: the p2p publisher or subscriber, crowd members (idle clients on
their own topic), group members, or the group publisher."""

IM_SENDER = "alice"
IM_RECEIVER = "bob"
IM_GROUP = "team"


def crowd_user(i: int) -> str:
    """The user id of crowd member `i` on an mqim target."""
    return f"crowd-{i}"


def member_user(i: int) -> str:
    """The user id of group member `i` on an mqim target."""
    return f"member-{i}"


@dataclass(frozen=True, kw_only=True)
class AdapterSpec:
    """Everything needed to rebuild an adapter in another process.

    Attributes:
        kind: `plain` topic relay or `im` (mqim).
        run: Identifies one measurement; part of topics (plain) or payloads (im).
        username: Plain: the user every client logs in as (external brokers); None for anonymous.
        password: Plain: that user's password. Im: the password of every bench user.
    """

    kind: Literal["plain", "im"]
    run: str
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True, kw_only=True)
class ClientSpec:
    """One MQTT client: identity, session and the filter it subscribes to (None: none)."""

    client_id: str
    username: str | None
    password: str | None
    clean_session: bool
    subscribe: str | None


class Delivery(NamedTuple):
    """A received bench message.

    Attributes:
        stream: What the numbers are counted per (topic or conversation).
        number: The publisher's message number n (1..N).
        sent_ns: `time.monotonic_ns()` at (or scheduled for) publishing.
        seq: The server-assigned sequence number (mqim), else None.
    """

    stream: str
    number: int
    sent_ns: int
    seq: int | None


class Adapter(ABC):
    """Maps the bench's abstract clients and messages onto one kind of target."""

    def __init__(self, spec: AdapterSpec) -> None:
        self.spec = spec
        self.run = spec.run

    @abstractmethod
    def client(self, client_set: ClientSet, index: int) -> ClientSpec:
        """Return client `index` of `client_set`."""

    @abstractmethod
    def message(self, client_set: ClientSet, number: int, sent_ns: int) -> tuple[str, bytes]:
        """Return the topic and payload that publisher `client_set` sends as message `number`."""

    @abstractmethod
    def decode(self, topic: str, payload: bytes | bytearray) -> Delivery | None:
        """Return the bench message in a received publish, or None if it is not one of this run."""


def _int_field(obj: Any, key: str) -> int | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    # bool is an int subclass; a JSON true is not a number here.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class PlainAdapter(Adapter):
    """A topic relay on any MQTT broker; see the module docstring."""

    def _topic(self, client_set: ClientSet, index: int) -> str:
        if client_set in ("p2p-pub", "p2p-sub"):
            return f"bench/{self.run}/p2p"
        if client_set in ("member", "group-pub"):
            return f"bench/{self.run}/group"
        return f"bench/{self.run}/crowd/{index}"

    def client(self, client_set: ClientSet, index: int) -> ClientSpec:
        publisher = client_set in ("p2p-pub", "group-pub")
        return ClientSpec(
            client_id=f"b{self.run}-{client_set}-{index}",
            username=self.spec.username,
            password=self.spec.password,
            # Like mqim's bob, the p2p subscriber keeps a persistent session (QoS1 state is kept).
            clean_session=client_set != "p2p-sub",
            subscribe=None if publisher else self._topic(client_set, index),
        )

    def message(self, client_set: ClientSet, number: int, sent_ns: int) -> tuple[str, bytes]:
        return self._topic(client_set, 0), b'{"t":%d,"n":%d}' % (sent_ns, number)

    def decode(self, topic: str, payload: bytes | bytearray) -> Delivery | None:
        if not topic.startswith(f"bench/{self.run}/"):
            return None
        try:
            obj = json.loads(payload)
        except ValueError:
            return None
        number, sent_ns = _int_field(obj, "n"), _int_field(obj, "t")
        if number is None or sent_ns is None:
            return None
        return Delivery(topic, number, sent_ns, None)


class ImAdapter(Adapter):
    """The mqim IM path; see the module docstring."""

    def client(self, client_set: ClientSet, index: int) -> ClientSpec:
        if client_set in ("p2p-pub", "group-pub"):
            user, topic = IM_SENDER, None
        elif client_set == "p2p-sub":
            user, topic = IM_RECEIVER, inbox_topic(IM_RECEIVER, InboxKind.MSG)
        elif client_set == "crowd":
            user = crowd_user(index)
            topic = inbox_topic(user, InboxKind.MSG)
        else:
            user, topic = member_user(index), group_topic(IM_GROUP, GroupKind.MSG)
        return ClientSpec(
            # Stable ids: bob's persistent session is reused by every run instead of piling up.
            client_id=f"{user}-bench",
            username=user,
            password=self.spec.password,
            clean_session=client_set != "p2p-sub",
            subscribe=topic,
        )

    def message(self, client_set: ClientSet, number: int, sent_ns: int) -> tuple[str, bytes]:
        request: dict[str, Any] = {"v": 1, "id": f"b-{self.run}-{number}", "text": "x"}
        if client_set == "group-pub":
            request["group"] = IM_GROUP
        else:
            request["to"] = IM_RECEIVER
        request["data"] = {"t": sent_ns, "n": number, "r": self.run}
        return up_topic(IM_SENDER, UpKind.MSG), json.dumps(request, separators=(",", ":")).encode()

    def decode(self, topic: str, payload: bytes | bytearray) -> Delivery | None:
        if not topic.endswith("/msg"):
            return None
        try:
            obj = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        data = obj.get("data")
        conv = obj.get("conv")
        if not isinstance(data, dict) or data.get("r") != self.run or not isinstance(conv, str):
            return None
        number, sent_ns = _int_field(data, "n"), _int_field(data, "t")
        if number is None or sent_ns is None:
            return None
        return Delivery(conv, number, sent_ns, _int_field(obj, "seq"))


def make_adapter(spec: AdapterSpec) -> Adapter:
    """Return the adapter described by `spec`."""
    return ImAdapter(spec) if spec.kind == "im" else PlainAdapter(spec)
