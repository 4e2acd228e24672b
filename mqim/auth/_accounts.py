"""From a stored account to the kind of ACL identity it authenticates as."""

from __future__ import annotations

from mqim.acl import IdentityKind
from mqim.storage import AccountKind, UserRecord


def identity_kind(record: UserRecord) -> IdentityKind:
    """The ACL identity kind of an account."""
    if record.kind == AccountKind.SERVICE:
        return "service"
    if record.kind == AccountKind.BRIDGE:
        return "bridge"
    return "user"
