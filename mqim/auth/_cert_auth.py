"""The "cert" authentication method: a verified TLS client certificate names the user.

Its CN (or first DNS subjectAltName) is the user id; a username, if sent, must be the same. Only
listeners configured with a CA file pass certificates on (see `MqimBroker.authenticate`).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from mqim.acl import Identity
from mqim.auth._accounts import identity_kind
from mqim.auth._authenticator import ConnectRequest
from mqim.protocol import is_valid_id
from mqim.storage import Storage

log = logging.getLogger("mqim.broker.auth")

CertUserField = Literal["cn", "san"]
"""Where a client certificate names its user: the subject's CN or the first DNS subjectAltName."""


def certificate_user(peer_cert: dict[str, Any], field: CertUserField) -> str | None:
    """The user a verified certificate (as `ssl.SSLSocket.getpeercert()` returns it) names.

    Returns None when the field is absent, appears more than once (ambiguous), or is not a
    valid user id.
    """
    values: list[str] = []
    if field == "cn":
        for rdn in peer_cert.get("subject", ()):
            for attribute in rdn:
                if len(attribute) == 2 and attribute[0] == "commonName":
                    values.append(str(attribute[1]))
    else:
        for kind, value in peer_cert.get("subjectAltName", ()):
            if kind == "DNS":
                values.append(str(value))
                break  # the first DNS name is the user; others name the device
    if len(values) != 1 or not is_valid_id(values[0]):
        return None
    return values[0]


class CertificateAuthenticator:
    """The "cert" method: a verified TLS client certificate names the user.

    Args:
        storage: Accounts (the named account must exist and be enabled).
        field: `cn` (subject common name) or `san` (first DNS subjectAltName).
    """

    def __init__(self, *, storage: Storage, field: CertUserField = "cn") -> None:
        self._storage = storage
        self._field = field

    async def authenticate(self, request: ConnectRequest) -> Identity | None:
        if not request.peer_cert:
            return None
        user = certificate_user(request.peer_cert, self._field)
        if user is None:
            log.info("client certificate from %s names no valid user", request.remote_address)
            return None
        if request.username is not None and request.username != user:
            return None  # the client asks to be someone else: let another method decide
        record = await self._storage.get_user(user)
        if record is None or record.disabled:
            log.info("certificate of unknown or disabled user %r refused", user)
            return None
        return Identity(user=record.user_id, client_id=request.client_id, kind=identity_kind(record))
