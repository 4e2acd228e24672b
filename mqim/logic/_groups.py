"""The `cmd` request: group administration with owner/admin/member roles.

`up/{me}/cmd` `{"v":1,"id","op",...}`; the answer goes to `u/{me}/cmd` as
`{"v":1,"ref":id,"ok":true,"result":{...}}` or `{"v":1,"ref":id,"ok":false,"error":{"code",
"message"}}`. A payload that is not a readable request (bad JSON, no `id` or `op`) gets the usual
`error` on `u/{me}/error` instead.

| op            | who                 | fields                      |
|---------------|---------------------|-----------------------------|
| group.create  | anyone (-> owner)   | group, name?, members?      |
| group.add     | owner, admin        | group, members              |
| group.remove  | owner; admin for plain members | group, members   |
| group.leave   | a member (an owner hands over to the first admin, else member) | group |
| group.info    | a member            | group, offset?, limit?      |
| group.list    | anyone (own groups) |                             |
| group.rename  | owner, admin        | group, name                 |
| group.role    | owner               | group, user, role (owner: hand over) |

After every stored change the service updates the shared membership index (the broker's ACL
and server-managed subscriptions follow at once), then tells the members with an `event`
`{"type":op,"group","by",...}` on `g/{group}/event`, and each added or removed user personally on
`u/{user}/event` (`group.added`, `group.removed`; `group.left` for the leaver's devices): a
removed member's group subscription is gone, and a standalone broker applies a new member's
subscription only after routing the group event.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mqim.logic._exceptions import RequestRejected
from mqim.logic._limits import LogicLimits
from mqim.logic._membership import GroupAccess
from mqim.logic._replies import UNAVAILABLE_MESSAGE, Outbound, group_event, rejection_reply, user_event
from mqim.logic._requests import Uplink
from mqim.logic._users import UserDirectory
from mqim.logic._validate import parse_request
from mqim.protocol import CmdError, CmdReply, CmdRequest, ErrorCode, InboxKind, inbox_topic
from mqim.storage import AlreadyExists, GroupRecord, NotFound, Role, Storage, StorageError

_log = logging.getLogger(__name__)

_Op = Callable[[str, CmdRequest], Awaitable[tuple[dict[str, Any], list[Outbound]]]]

_MANAGERS = frozenset({Role.OWNER, Role.ADMIN})


def _fail(message: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> RequestRejected:
    return RequestRejected(message, code=code)


def _names(users: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(u) for u in users[:limit])
    return shown + (f" and {len(users) - limit} more" if len(users) > limit else "")


def successor(record: GroupRecord, leaving: str) -> str | None:
    """Who owns the group after its owner `leaving` goes: the first admin, else the first member. Pure."""
    others = sorted(u for u in record.members if u != leaving)
    admins = [u for u in others if record.members[u] == Role.ADMIN]
    if admins:
        return admins[0]
    return others[0] if others else None


def cmd_reply(
    user: str, ref: str, *, result: dict[str, Any] | None = None, error: RequestRejected | None = None
) -> Outbound:
    """The `cmd` answer on `u/{user}/cmd`: ok with `result`, or the `error`."""
    if error is not None:
        payload = CmdReply(ref=ref, ok=False, error=CmdError(code=error.code, message=error.message))
    else:
        payload = CmdReply(ref=ref, ok=True, result=result or {})
    retry = (user, ref) if error is not None and error.code is ErrorCode.UNAVAILABLE else None
    return Outbound(inbox_topic(user, InboxKind.CMD), payload.to_json(), retry=retry)


class CmdHandler:
    """Handles `im/v1/up/{me}/cmd`: the group operations of the module docstring.

    Requests are handled one at a time, in arrival order, so the operations of one batch on one
    group apply in the order they were sent.

    Args:
        storage: Groups and members.
        users: Account look-ups (members added must exist and be enabled).
        groups: The membership index to keep current.
        limits: Group size and request limits.
    """

    def __init__(
        self, *, storage: Storage, users: UserDirectory, groups: GroupAccess, limits: LogicLimits
    ) -> None:
        self._storage = storage
        self._users = users
        self._groups = groups
        self._limits = limits
        self._ops: dict[str, _Op] = {
            "group.create": self._create,
            "group.add": self._add,
            "group.remove": self._remove,
            "group.leave": self._leave,
            "group.info": self._info,
            "group.list": self._list,
            "group.rename": self._rename,
            "group.role": self._role,
        }

    async def __call__(self, uplinks: Sequence[Uplink]) -> list[Outbound]:
        """Handle the `cmd` requests of one batch, one after the other."""
        out: list[Outbound] = []
        for up in uplinks:
            try:
                request = parse_request(up.payload, CmdRequest, limits=self._limits)
            except RequestRejected as exc:
                out.append(rejection_reply(up.sender, exc))
                continue
            op = self._ops.get(request.op)
            if op is None:
                known = ", ".join(sorted(self._ops))
                error = _fail(f"unknown op {request.op[:64]!r}; expected one of {known}")
                out.append(cmd_reply(up.sender, request.id, error=error))
                continue
            try:
                result, notices = await op(up.sender, request)
            except RequestRejected as exc:
                out.append(cmd_reply(up.sender, request.id, error=exc))
                continue
            except StorageError:
                _log.exception("%s by %r failed", request.op, up.sender)
                error = _fail(UNAVAILABLE_MESSAGE, ErrorCode.UNAVAILABLE)
                out.append(cmd_reply(up.sender, request.id, error=error))
                continue
            out.append(cmd_reply(up.sender, request.id, result=result))
            out.extend(notices)
        return out

    # -- checks --------------------------------------------------------------------------------
    async def _group(
        self, user: str, request: CmdRequest, *, roles: frozenset[Role] | None = None
    ) -> GroupRecord:
        """The group of `request`, if `user` is a member (with one of `roles`, when given)."""
        if request.group is None:
            raise _fail(f"{request.op} needs 'group'")
        record = await self._storage.get_group(request.group)
        role = record.members.get(user) if record is not None else None
        if record is None or role is None:
            raise _fail(f"you are not a member of group {request.group!r}", ErrorCode.FORBIDDEN)
        if roles is not None and role not in roles:
            allowed = " or ".join(sorted(r.value for r in roles))
            raise _fail(f"{request.op} needs the {allowed} role in {request.group!r}", ErrorCode.FORBIDDEN)
        return record

    def _member_list(self, request: CmdRequest, *, required: bool) -> list[str]:
        members = list(dict.fromkeys(request.members or []))
        if required and not members:
            raise _fail(f"{request.op} needs 'members', a non-empty list of user ids")
        if len(members) > self._limits.max_cmd_members:
            raise _fail(
                f"at most {self._limits.max_cmd_members} members per request, got {len(members)}",
                ErrorCode.TOO_LARGE,
            )
        return members

    def _name(self, name: str | None, default: str | None = None) -> str:
        value = (name if name is not None else default or "").strip()
        if not value:
            raise _fail("'name' must not be empty")
        if len(value) > self._limits.max_group_name_chars:
            raise _fail(
                f"name is {len(value)} characters, limit is {self._limits.max_group_name_chars}",
                ErrorCode.TOO_LARGE,
            )
        return value

    async def _check_joiners(self, users: Sequence[str], *, size_after: int) -> None:
        """New members exist, fit in the group and in their own group limit."""
        limits = self._limits
        if size_after > limits.max_group_members:
            raise _fail(
                f"a group has at most {limits.max_group_members} members; this would make {size_after}",
                ErrorCode.TOO_LARGE,
            )
        missing = []
        for user in users:
            account = await self._users.get(user)
            if account is None or account.disabled:
                missing.append(user)
        if missing:
            raise _fail(f"unknown users: {_names(missing)}", ErrorCode.NOT_FOUND)
        for user in users:
            if await self._groups.group_count(user) >= limits.max_groups_per_user:
                raise _fail(
                    f"user {user!r} is already in {limits.max_groups_per_user} groups", ErrorCode.TOO_LARGE
                )

    def _listed(self, users: Sequence[str]) -> dict[str, Any]:
        """`members` (when few enough to list in an event) and `count`."""
        shown = list(users) if len(users) <= self._limits.max_event_members else None
        return {"members": shown, "count": len(users)}

    # -- operations ----------------------------------------------------------------------------
    async def _create(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        if request.group is None:
            raise _fail("group.create needs 'group', the new group's id")
        group = request.group
        name = self._name(request.name, group)
        joiners = [u for u in self._member_list(request, required=False) if u != me]
        await self._check_joiners([me, *joiners], size_after=1 + len(joiners))
        try:
            record = await self._storage.create_group(group, name=name, owner=me, members=joiners)
        except AlreadyExists:
            raise _fail(f"group {group!r} already exists") from None
        self._groups.group_changed(group, list(record.members))
        notices = [group_event(group, "group.create", group=group, name=name, by=me, **self._listed(joiners))]
        notices += [user_event(u, "group.added", group=group, name=name, by=me) for u in joiners]
        result = {"group": group, "name": name, "count": len(record.members)}
        return result, notices

    async def _add(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        record = await self._group(me, request, roles=_MANAGERS)
        group = record.group_id
        joiners = [u for u in self._member_list(request, required=True) if u not in record.members]
        if joiners:
            await self._check_joiners(joiners, size_after=len(record.members) + len(joiners))
            record = await self._set_members(group, dict.fromkeys(joiners, Role.MEMBER))
        notices: list[Outbound] = []
        if joiners:
            notices.append(group_event(group, "group.add", group=group, by=me, **self._listed(joiners)))
            notices += [user_event(u, "group.added", group=group, name=record.name, by=me) for u in joiners]
        return {"group": group, "added": joiners, "count": len(record.members)}, notices

    async def _remove(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        record = await self._group(me, request, roles=_MANAGERS)
        group = record.group_id
        leaving = [u for u in self._member_list(request, required=True) if u in record.members]
        if me in leaving:
            raise _fail("use group.leave to leave a group")
        mine = record.members[me]
        for user in leaving:
            theirs = record.members[user]
            if theirs == Role.OWNER or (mine == Role.ADMIN and theirs == Role.ADMIN):
                raise _fail(f"an {mine.value} cannot remove the {theirs.value} {user!r}", ErrorCode.FORBIDDEN)
        notices: list[Outbound] = []
        if leaving:
            record = await self._set_members(group, dict.fromkeys(leaving))
            notices.append(group_event(group, "group.remove", group=group, by=me, **self._listed(leaving)))
            notices += [user_event(u, "group.removed", group=group, by=me) for u in leaving]
        return {"group": group, "removed": leaving, "count": len(record.members)}, notices

    async def _leave(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        record = await self._group(me, request)
        group = record.group_id
        if set(record.members) == {me}:
            with contextlib.suppress(NotFound):  # gone meanwhile: the outcome is the same
                await self._storage.delete_group(group)
            self._groups.group_changed(group, ())
            return {"group": group, "deleted": True}, [user_event(me, "group.left", group=group)]
        changes: dict[str, Role | None] = {me: None}
        owner = None
        if record.members[me] == Role.OWNER:
            owner = successor(record, me)
            if owner is not None:
                changes[owner] = Role.OWNER
        await self._set_members(group, changes)
        notices = [
            group_event(group, "group.leave", group=group, by=me, members=[me], count=1, owner=owner),
            user_event(me, "group.left", group=group),
        ]
        return {"group": group, "deleted": False, "owner": owner}, notices

    async def _info(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        record = await self._group(me, request)
        offset = request.offset or 0
        limit = min(request.limit or self._limits.max_info_members, self._limits.max_info_members)
        users = sorted(record.members)
        page = users[offset : offset + limit]
        result = {
            "group": record.group_id,
            "name": record.name,
            "created_ts": record.created_ts,
            "count": len(users),
            "offset": offset,
            "members": [{"user": u, "role": record.members[u].value} for u in page],
            "more": offset + len(page) < len(users),
        }
        return result, []

    async def _list(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        listed: list[dict[str, Any]] = []
        for group in await self._storage.groups_of(me):
            record = await self._storage.get_group(group)
            if record is None or me not in record.members:
                continue  # changed meanwhile
            listed.append(
                {
                    "group": group,
                    "name": record.name,
                    "role": record.members[me].value,
                    "count": len(record.members),
                }
            )
        return {"groups": listed}, []

    async def _rename(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        record = await self._group(me, request, roles=_MANAGERS)
        group = record.group_id
        name = self._name(request.name)
        await self._storage.rename_group(group, name)
        return {"group": group, "name": name}, [
            group_event(group, "group.rename", group=group, name=name, by=me)
        ]

    async def _role(self, me: str, request: CmdRequest) -> tuple[dict[str, Any], list[Outbound]]:
        record = await self._group(me, request, roles=frozenset({Role.OWNER}))
        group = record.group_id
        if request.user is None or request.role is None:
            raise _fail("group.role needs 'user' and 'role' (owner, admin or member)")
        user, role = request.user, Role(request.role)
        if user not in record.members:
            raise _fail(f"{user!r} is not a member of {group!r}", ErrorCode.NOT_FOUND)
        if user == me:
            raise _fail(
                "the owner keeps its role until it hands the group over (role owner to another member)"
            )
        changes: dict[str, Role | None] = {user: role}
        if role == Role.OWNER:
            changes[me] = Role.ADMIN
        await self._set_members(group, changes)
        notices = [group_event(group, "group.role", group=group, user=user, role=role.value, by=me)]
        return {"group": group, "user": user, "role": role.value}, notices

    async def _set_members(self, group: str, changes: dict[str, Role | None]) -> GroupRecord:
        try:
            record = await self._storage.set_members(group, changes)
        except NotFound:
            raise _fail(f"group {group!r} no longer exists", ErrorCode.NOT_FOUND) from None
        self._groups.group_changed(group, list(record.members))
        return record
