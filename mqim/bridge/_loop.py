"""Loop prevention for outbound bridges that works with any remote broker. Pure.

Two mechanisms, both independent of the remote (MQTT 3.1.1 has no "no local" option, and only
Mosquitto-style brokers honour `try_private`):

1. Local side — *origin marking*: a message a bridge brings in from its remote is published into
   mqim while the bridge holds an "injecting" mark; the broker routes synchronously, so the
   bridge's own out-listener sees that mark and never exports the message again. Nothing that
   came in can go back out through the same bridge, whatever the topic rules say.
2. Remote side — *echo guard*: when the remote topic of a message we export is also covered by
   one of our `in` rules, the remote broker will send it back to us. `EchoGuard` remembers each
   such (remote topic, payload digest) for `window_s` seconds and the first matching arrival is
   dropped as our echo. Entries are bounded (`max_entries`, oldest out first).

If an echo arrives after its window (e.g. held in our persistent session across a long outage),
mechanism 1 still stops it from going out again: the worst case is one duplicate local delivery,
never a loop. A genuine remote message identical in topic and payload to one we exported within
the window is taken for the echo; in counts nothing is lost (one of the two identical copies is
delivered).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Final

DEFAULT_ECHO_WINDOW_S: Final = 30.0
"""How long an exported message's echo is expected."""

DEFAULT_MAX_ECHO_ENTRIES: Final = 10_000
"""How many expected echoes one bridge remembers."""


def payload_digest(payload: bytes) -> bytes:
    """A short collision-resistant digest of a payload (what the guard keys on)."""
    return hashlib.blake2b(payload, digest_size=16).digest()


class EchoGuard:
    """A bounded, time-limited multiset of (topic, payload digest) we expect to see again.

    Args:
        window_s: Seconds an expectation lives.
        max_entries: Most expectations kept; beyond it the oldest is forgotten (counted in
            `forgotten`).
    """

    def __init__(
        self, *, window_s: float = DEFAULT_ECHO_WINDOW_S, max_entries: int = DEFAULT_MAX_ECHO_ENTRIES
    ) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValueError("window_s and max_entries must be positive")
        self.window_s = window_s
        self.max_entries = max_entries
        self.forgotten = 0
        # key -> (count, expiry of the newest expectation); OrderedDict keeps insertion order so
        # expiry and eviction pop from the front.
        self._entries: OrderedDict[tuple[str, bytes], tuple[int, float]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def expect(self, topic: str, payload: bytes, now: float) -> None:
        """Remember that (topic, payload) may come back before `now + window_s`."""
        self._expire(now)
        key = (topic, payload_digest(payload))
        count, _ = self._entries.pop(key, (0, 0.0))
        self._entries[key] = (count + 1, now + self.window_s)
        self._size += 1
        while self._size > self.max_entries:
            old_key, (old_count, old_expiry) = self._entries.popitem(last=False)
            self.forgotten += 1
            self._size -= 1
            if old_count > 1:
                # Put the rest back at the front: they are still the oldest.
                self._entries[old_key] = (old_count - 1, old_expiry)
                self._entries.move_to_end(old_key, last=False)

    def is_echo(self, topic: str, payload: bytes, now: float) -> bool:
        """True (and the expectation is used up) if (topic, payload) is an expected echo."""
        self._expire(now)
        if not self._entries:
            return False
        key = (topic, payload_digest(payload))
        entry = self._entries.get(key)
        if entry is None:
            return False
        count, expiry = entry
        self._size -= 1
        if count > 1:
            self._entries[key] = (count - 1, expiry)
        else:
            del self._entries[key]
        return True

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (count, expiry) = next(iter(entries.items()))
            if expiry > now:
                return
            del entries[key]
            self._size -= count
