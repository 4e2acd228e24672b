"""Cluster mode: settings, Redis key names and the stream entry format (pure, no I/O).

Layout under a prefix (default ``mqim``, the same as `RedisSessionStore`'s)::

    {prefix}:cluster:nodes              hash    node id -> JSON {"started", "host", "port"}
    {prefix}:cluster:alive:{node}       string  JSON heartbeat (connections, sessions...), TTL
    {prefix}:cluster:routes:{node}      set     filters the node's sessions subscribe to
    {prefix}:cluster:routes             pub/sub JSON {"node", "add": [...], "del": [...]} deltas
    {prefix}:cluster:clients            hash    client id -> node id that owns the session
    {prefix}:cluster:owned:{node}       set     client ids of the node's persistent sessions
    {prefix}:cluster:stream:{node}      stream  messages and control entries for the node
    {prefix}:cluster:kicked:{token}     list    a node's answer to a takeover ("kick") entry
    {prefix}:cluster:adopt:{node}       string  lock of the node adopting a dead node's sessions
    {prefix}:cluster:hold:adopt         string  test hook: while it exists, an adopter waits
    {prefix}:cluster:deaths             list    recent adoptions, newest first (JSON, capped)
                                                after taking the sessions over, before draining
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

GROUP: Final = "mqim"
"""The consumer group every node stream has (its owner, or an adopter, reads through it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSettings:
    """Timing and bounds of cluster mode.

    Attributes:
        node_id: This node's id (unique in the cluster, a valid id: letters, digits, `-_.`).
        prefix: Redis key prefix (the session store's).
        heartbeat_s: How often a node refreshes its heartbeat key.
        node_ttl_s: A node whose heartbeat is older than this is dead: its sessions are adopted.
        resync_s: Period of the full route-table resync (covers lost pub/sub deltas).
        stream_maxlen: Approximate bound of each node stream (XADD MAXLEN ~): entries beyond it
            are trimmed oldest first, so a node away for long loses its oldest forwards.
        max_outbox: Forwards and control writes queued for Redis; beyond it forwards are
            dropped and counted (`cluster_forward_dropped`).
        read_batch: Entries one XREADGROUP returns at most.
        kick_timeout_s: How long a takeover waits for the old node to hand the session over.
        timeout_s: Socket timeout of Redis commands.
    """

    node_id: str
    prefix: str = "mqim"
    heartbeat_s: float = 1.0
    node_ttl_s: float = 4.0
    resync_s: float = 15.0
    stream_maxlen: int = 100_000
    max_outbox: int = 100_000
    read_batch: int = 256
    kick_timeout_s: float = 3.0
    timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ClusterKeys:
    """Key names under one prefix."""

    prefix: str

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:cluster:nodes"

    def alive(self, node: str) -> str:
        return f"{self.prefix}:cluster:alive:{node}"

    def routes(self, node: str) -> str:
        return f"{self.prefix}:cluster:routes:{node}"

    @property
    def route_channel(self) -> str:
        return f"{self.prefix}:cluster:routes"

    @property
    def clients(self) -> str:
        return f"{self.prefix}:cluster:clients"

    def owned(self, node: str) -> str:
        return f"{self.prefix}:cluster:owned:{node}"

    def stream(self, node: str) -> str:
        return f"{self.prefix}:cluster:stream:{node}"

    def kicked(self, token: str) -> str:
        return f"{self.prefix}:cluster:kicked:{token}"

    def adopt(self, node: str) -> str:
        return f"{self.prefix}:cluster:adopt:{node}"

    @property
    def hold_adopt(self) -> str:
        return f"{self.prefix}:cluster:hold:adopt"

    @property
    def deaths(self) -> str:
        return f"{self.prefix}:cluster:deaths"


@dataclass(frozen=True, slots=True, kw_only=True)
class Forward:
    """A message published on another node, to be routed here.

    Attributes:
        topic: The topic.
        payload: The payload.
        qos: The QoS as published.
        retain: The retain flag as published (the receiving node updates its retained copy).
        shares: Share filters (`$share/g/f`) this node serves for this message; other share
            groups that match are served by another node (or were already).
        origin: The node it was published on.
        mid: The message's cluster id (origin incarnation and a counter): the same in every
            stream the message is written to, so a session that gets it twice recognises it.
        to: Empty: route to every matching session. Else only to these client ids (a session
            that moved, or is moving, to this node; see `cluster/_adopt.py`).
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    shares: tuple[str, ...]
    origin: str
    mid: str = ""
    to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Kick:
    """Another node took over `client_id`: close its connection and hand its session over.

    Attributes:
        client_id: The client id.
        token: Where to answer (`ClusterKeys.kicked`).
        by: The node that took it over.
    """

    client_id: str
    token: str
    by: str


Entry = Forward | Kick
Fields = dict[bytes | str, bytes | str | int | float]


def encode_forward(forward: Forward) -> Fields:
    """The stream fields of a `Forward`."""
    fields: Fields = {
        "k": "m",
        "t": forward.topic,
        "p": forward.payload,
        "q": forward.qos,
        "r": int(forward.retain),
        "o": forward.origin,
    }
    if forward.shares:
        fields["s"] = json.dumps(list(forward.shares))
    if forward.mid:
        fields["i"] = forward.mid
    if forward.to:
        fields["to"] = json.dumps(list(forward.to))
    return fields


def encode_kick(kick: Kick) -> Fields:
    """The stream fields of a `Kick`."""
    return {"k": "kick", "c": kick.client_id, "tok": kick.token, "by": kick.by}


def decode_entry(fields: dict[bytes, bytes]) -> Entry | None:
    """Decode stream fields; None for an entry of an unknown kind or a corrupt one."""
    try:
        kind = fields[b"k"]
        if kind == b"m":
            qos = int(fields[b"q"])
            if not 0 <= qos <= 2:
                return None
            raw_shares = fields.get(b"s")
            shares: tuple[str, ...] = ()
            if raw_shares:
                loaded = json.loads(raw_shares)
                if not isinstance(loaded, list) or not all(isinstance(s, str) for s in loaded):
                    return None
                shares = tuple(loaded)
            to: tuple[str, ...] = ()
            raw_to = fields.get(b"to")
            if raw_to:
                targets = json.loads(raw_to)
                if not isinstance(targets, list) or not all(isinstance(c, str) for c in targets):
                    return None
                to = tuple(targets)
            return Forward(
                topic=fields[b"t"].decode(),
                payload=bytes(fields[b"p"]),
                qos=qos,
                retain=fields.get(b"r") == b"1",
                shares=shares,
                origin=fields.get(b"o", b"?").decode(),
                mid=fields.get(b"i", b"").decode(),
                to=to,
            )
        if kind == b"kick":
            return Kick(
                client_id=fields[b"c"].decode(),
                token=fields[b"tok"].decode(),
                by=fields.get(b"by", b"?").decode(),
            )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    return None


def encode_delta(node: str, add: list[str], remove: list[str]) -> str:
    """A route-table change notice."""
    return json.dumps({"node": node, "add": add, "del": remove})


def decode_delta(raw: bytes) -> tuple[str, list[str], list[str]] | None:
    """The inverse of `encode_delta`; None when malformed."""
    try:
        body = json.loads(raw)
        node, add, remove = body["node"], body["add"], body["del"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(node, str) or not isinstance(add, list) or not isinstance(remove, list):
        return None
    if not all(isinstance(f, str) for f in [*add, *remove]):
        return None
    return node, add, remove
