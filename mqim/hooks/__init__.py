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
    EVENT_NAMES,
    MAX_ENDPOINTS,
    OUTBOX_FILENAME,
    HookEndpoint,
    HookEventName,
    HooksConfig,
)
from mqim.hooks._events import (
    StoredMessage,
    message_event,
    presence_event,
    preview_of,
    probe_event,
    read_message,
)
from mqim.hooks._exceptions import HookConfigError, HookHttpError, HooksError, HookStorageError
from mqim.hooks._http import HttpClient
from mqim.hooks._outbox import HookOutbox, OutboxRow
from mqim.hooks._sender import EndpointSender, EndpointStats, client_for, signed_headers
from mqim.hooks._service import HookService, ListenerPort
from mqim.hooks._signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    signed_material,
    verify,
)
from mqim.hooks._trigger import (
    DIRECT_FILTER,
    GROUP_FILTER,
    PRESENCE_FILTER,
    HookTrigger,
    MemberLookup,
    OnlineView,
)

__all__ = [
    "DELIVERY_HEADER",
    "DIRECT_FILTER",
    "EVENT_HEADER",
    "EVENT_NAMES",
    "GROUP_FILTER",
    "MAX_ENDPOINTS",
    "OUTBOX_FILENAME",
    "PRESENCE_FILTER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "EndpointSender",
    "EndpointStats",
    "HookConfigError",
    "HookEndpoint",
    "HookEventName",
    "HookHttpError",
    "HookOutbox",
    "HookService",
    "HookStorageError",
    "HookTrigger",
    "HooksConfig",
    "HooksError",
    "HttpClient",
    "ListenerPort",
    "MemberLookup",
    "OnlineView",
    "OutboxRow",
    "StoredMessage",
    "client_for",
    "message_event",
    "presence_event",
    "preview_of",
    "probe_event",
    "read_message",
    "sign",
    "signed_headers",
    "signed_material",
    "verify",
]
