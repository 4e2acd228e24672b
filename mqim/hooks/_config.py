"""The `[hooks]` configuration: endpoints and the global bounds (pydantic models, pure).

```toml
[hooks]
max_outbox_rows = 100000
[[hooks.endpoints]]
name = "push"
url = "https://push.example.com/mqim"
secret = "a long random string"
events = ["message.offline", "user.online", "user.offline"]
include_preview = true
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from mqim.protocol import ID_PATTERN

HookEventName = Literal["message.offline", "user.online", "user.offline"]
"""Events an endpoint may ask for (`test` is sent only by `mqim hooks test`)."""

EVENT_NAMES: Final[tuple[HookEventName, ...]] = ("message.offline", "user.online", "user.offline")

MAX_ENDPOINTS: Final = 32
"""Endpoints one server posts to."""

OUTBOX_FILENAME: Final = "hooks-outbox.db"
"""The durable outbox inside the data directory."""

_MIB = 1024 * 1024


class _Model(BaseModel):
    # Unknown keys are errors, as in the rest of the configuration.
    model_config = ConfigDict(extra="forbid", frozen=True)


class HookEndpoint(_Model):
    """One receiver of webhook POSTs."""

    name: Annotated[str, StringConstraints(pattern=f"^{ID_PATTERN}$")]
    """Unique name; the outbox keys its rows by it (`mqim hooks test NAME`)."""
    url: str
    """`http://` or `https://` URL the events are POSTed to."""
    secret: SecretStr
    """Shared secret of the HMAC-SHA256 signature (`X-Mqim-Signature`)."""
    events: tuple[HookEventName, ...] = ("message.offline",)
    """Events sent to this endpoint."""
    include_preview: bool = True
    """Put the start of the message text (`preview`) into `message.offline` events."""
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Connect plus request plus response, per attempt."""
    cafile: Path | None = None
    """CA bundle for an `https://` endpoint; None uses the system's CAs."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"invalid port: {exc}") from None
        return value

    @field_validator("secret")
    @classmethod
    def _secret_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("events")
    @classmethod
    def _events_distinct(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one event is required")
        if len(set(value)) != len(value):
            raise ValueError(f"an event is listed twice: {list(value)}")
        return value


class HooksConfig(_Model):
    """Webhooks: where events are POSTed and the bounds of the durable outbox."""

    endpoints: Annotated[tuple[HookEndpoint, ...], Field(max_length=MAX_ENDPOINTS)] = ()
    """Receivers; none configured turns the feature off (no outbox file, no listener)."""
    max_outbox_rows: PositiveInt = 100_000
    """Undelivered events kept, all endpoints together. At the bound the oldest are dropped
    (and counted): a push for the newest message matters more than one for an old one, and
    the messages themselves stay in storage for `sync`."""
    max_outbox_bytes: PositiveInt = 64 * _MIB
    """Bytes of undelivered event bodies kept; the same rule at the bound."""
    max_pending_triggers: PositiveInt = 10_000
    """Published messages waiting to be turned into events (between routing and the outbox);
    beyond it the oldest are dropped and counted."""
    preview_chars: Annotated[int, Field(ge=0, le=4096)] = 120
    """Longest `preview` (characters of the message text); 0 sends none."""
    retry_initial_s: PositiveFloat = 1.0
    """First pause after a failed POST; it doubles per failure."""
    retry_max_s: PositiveFloat = 60.0
    """Longest pause between two attempts of one event."""
    max_response_bytes: PositiveInt = 65536
    """Response body bytes read from a receiver (the rest closes the connection)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [endpoint.name for endpoint in self.endpoints]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"endpoint name {name!r} is used twice")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must not be below retry_initial_s")
        return self

    def endpoint(self, name: str) -> HookEndpoint | None:
        """The endpoint called `name`, if configured."""
        return next((e for e in self.endpoints if e.name == name), None)
