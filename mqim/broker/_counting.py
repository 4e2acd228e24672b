"""The broker's named counters: `Counters` (what `mqim status`, `$SYS` and the metrics read) and
`count_event` for the named extras (`Counters.extra`: refusals, kicks, drops...)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Counters:
    """Monotonic counters exposed by `mqim status` and the metrics endpoint."""

    published: int = 0
    delivered: int = 0
    acl_denied_publish: int = 0
    acl_denied_receive: int = 0
    acl_denied_subscribe: int = 0
    dropped_qos0: int = 0
    evicted: int = 0
    protocol_errors: int = 0
    connections_refused: int = 0
    retained_refused: int = 0
    refused_full: int = 0
    oversize_discarded: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def count_event(counters: Counters, name: str, n: int = 1) -> None:
    """Add `n` to the named counter `name`."""
    extra = counters.extra
    extra[name] = extra.get(name, 0) + n
