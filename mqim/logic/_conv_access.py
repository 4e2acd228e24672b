"""Who takes part in a conversation: the check shared by read, typing and history."""

from __future__ import annotations

from dataclasses import dataclass

from mqim.logic._exceptions import RequestRejected
from mqim.logic._membership import GroupAccess
from mqim.protocol import ErrorCode, InvalidId, parse_conv


@dataclass(frozen=True, slots=True)
class ConvTarget:
    """A conversation a user takes part in: its peer (direct) or its group."""

    conv: str
    peer: str | None = None
    group: str | None = None


def direct_target(user: str, conv: str, *, ref: str | None) -> ConvTarget | None:
    """The target of `conv` when it is a direct conversation of `user`; None for a group. Pure.

    Raises:
        RequestRejected: `bad_request` for a malformed id, `forbidden` for someone else's
            direct conversation.
    """
    try:
        kind, ids = parse_conv(conv)
    except InvalidId as exc:
        raise RequestRejected(exc.message, ref=ref) from None
    if kind == "g":
        return None
    if user not in ids:
        raise RequestRejected(f"{conv!r} is not one of your conversations", code=ErrorCode.FORBIDDEN, ref=ref)
    peer = ids[1] if ids[0] == user else ids[0]
    return ConvTarget(conv=conv, peer=peer)


async def conv_target(user: str, conv: str, *, groups: GroupAccess, ref: str | None) -> ConvTarget:
    """The target of `conv` if `user` takes part in it now (a group: is a member).

    Raises:
        RequestRejected: `bad_request` for a malformed id, `forbidden` otherwise (a missing
            group answers the same as one the user is not in).
        StorageError: When membership must be read from storage and that fails.
    """
    direct = direct_target(user, conv, ref=ref)
    if direct is not None:
        return direct
    group = conv[2:]
    if not await groups.is_member(user, group):
        raise RequestRejected(f"you are not a member of group {group!r}", code=ErrorCode.FORBIDDEN, ref=ref)
    return ConvTarget(conv=conv, group=group)
