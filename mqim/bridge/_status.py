"""Bridge counters and the status file a running server writes for `mqim bridge list`."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

MAX_STATUS_BYTES: Final = 4 * 1024 * 1024
"""Largest status file read."""

MAX_ERROR_CHARS: Final = 300
"""Longest `last_error` kept."""


@dataclass(slots=True)
class BridgeStats:
    """Counters of one outbound bridge, mapping rule or command route. Monotonic except gauges.

    Attributes:
        state: "connecting", "connected", "disconnected" or "stopped" (outbound bridges),
            "active" (mappings and routes).
        messages_in: Messages brought into mqim (from the remote, or mapped into the IM).
        messages_out: Messages confirmed by the remote (or commands published to devices).
        dropped_loops: Messages not forwarded because they would loop (our own injections and
            echoes from the remote).
        dropped_overflow: Outbound messages dropped because the outbox was full and nobody
            could send them again (QoS 0, or published by the server itself).
        refused_full: Outbound messages refused because the outbox was full: their publishers
            got no PUBACK and send them again (nothing is lost).
        errors: Failed connects, publishes, outbox writes and unusable messages.
        reconnects: Successful connections after the first.
        pending_out: Messages in the outbox, waiting to be confirmed by the remote (gauge).
        pending_out_bytes: Their payload plus topic bytes (gauge).
        last_error: The most recent error, if any.
        since: When `state` last changed (seconds since the epoch).
    """

    state: str = "connecting"
    messages_in: int = 0
    messages_out: int = 0
    dropped_loops: int = 0
    dropped_overflow: int = 0
    refused_full: int = 0
    errors: int = 0
    reconnects: int = 0
    pending_out: int = 0
    pending_out_bytes: int = 0
    last_error: str | None = None
    since: float = 0.0

    def error(self, message: str) -> None:
        """Count an error and remember its text."""
        self.errors += 1
        self.last_error = message[:MAX_ERROR_CHARS]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Write the status file atomically (blocking: call it in a thread).

    Raises:
        OSError: The file cannot be written.
    """
    fd, tmp = tempfile.mkstemp(prefix=".bridges-status-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(status, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict[str, Any]:
    """The last status a server wrote, or {} when there is none or it cannot be read."""
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_STATUS_BYTES + 1)
    except OSError:
        return {}
    if len(data) > MAX_STATUS_BYTES:
        return {}
    try:
        status = json.loads(data)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}
