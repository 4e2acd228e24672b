"""The broker's named counters (`Hub.counters.extra`: refusals, kicks, drops...)."""

from __future__ import annotations

from mqim.broker._hub import Hub


def count_event(hub: Hub, name: str, n: int = 1) -> None:
    """Add `n` to the counter `name` of `hub`."""
    extra = hub.counters.extra
    extra[name] = extra.get(name, 0) + n
