"""Telling a user why a request was refused: an `error` payload on its inbox."""

from __future__ import annotations

from mqim.acl import Identity
from mqim.broker._hub import Hub
from mqim.protocol import ErrorCode, ErrorPayload, InboxKind, inbox_topic, is_valid_id, request_ref


def tell_error(hub: Hub, identity: Identity, payload: bytes, code: ErrorCode, message: str) -> None:
    """Send an `error` payload to a user's inbox, echoing the request id when it has one."""
    if not identity.user or identity.kind != "user" or not is_valid_id(identity.user):
        return
    ref = request_ref(payload)  # the head of an oversize PUBLISH, too
    error = ErrorPayload(ref=ref, code=code, message=message)
    hub.publish_local(inbox_topic(identity.user, InboxKind.ERROR), error.to_json(), qos=1)
