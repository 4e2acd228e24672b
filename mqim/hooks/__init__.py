"""Webhooks: signed HTTP POSTs to an application backend on IM events (the push seam).

- `_config`: the `[hooks]` section (`HooksConfig`, `HookEndpoint`), pure;
- `_signing`: `X-Mqim-Signature` (HMAC-SHA256 over timestamp and body) and `verify`, pure;
- `_events`: event bodies (`message.offline`, `user.online`, `user.offline`, `test`), pure;
- `_http`: a minimal HTTP/1.1 POST client on asyncio streams (http and https);
- `_outbox`: `HookOutbox`, the durable bounded queue (SQLite, own thread, batched);
- `_trigger`: `HookTrigger`, broker listeners turning routed messages into events;
- `_sender`: `EndpointSender`, ordered delivery with exponential back-off;
- `_service`: `HookService`, all of it as one async context for the server compositions.
"""

from mqim.hooks._config import (
    MAX_ENDPOINTS,
    OUTBOX_FILENAME,
    HookEndpoint,
    HookEventName,
    HooksConfig,
)
from mqim.hooks._events import (
    probe_event,
)
from mqim.hooks._exceptions import HookConfigError, HookHttpError, HooksError, HookStorageError
from mqim.hooks._outbox import HookOutbox
from mqim.hooks._sender import EndpointStats, client_for, signed_headers
from mqim.hooks._service import HookService
from mqim.hooks._signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "MAX_ENDPOINTS",
    "OUTBOX_FILENAME",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "EndpointStats",
    "HookConfigError",
    "HookEndpoint",
    "HookEventName",
    "HookHttpError",
    "HookOutbox",
    "HookService",
    "HookStorageError",
    "HooksConfig",
    "HooksError",
    "client_for",
    "probe_event",
    "signed_headers",
    "verify",
]
