"""Unit tests of the IM feature pieces of mqim.logic: pure decisions and storage-backed loaders."""

from __future__ import annotations

import pytest

from mqim.logic import LogicLimits
from mqim.logic._conv_access import ConvTarget, direct_target
from mqim.logic._exceptions import RequestRejected
from mqim.logic._groups import successor
from mqim.logic._read import read_receipt
from mqim.logic._send import op_problem
from mqim.logic._validate import parse_send
from mqim.protocol import ErrorCode
from mqim.storage import GroupRecord, MessageRecord, Role

LIMITS = LogicLimits()


def _record(kind: str = "msg", sender: str = "alice") -> MessageRecord:
    return MessageRecord(
        conv="d:alice:bob", seq=1, server_id="s", sender=sender, client_id="c", ts=1, kind=kind, body={}
    )


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"id":"e","to":"bob","op":"edit","ref_seq":1,"text":"x"}', None),
        (b'{"id":"r","to":"bob","op":"recall","ref_seq":1}', None),
        (b'{"id":"d","group":"team","op":"delete","ref_seq":3,"text":"ignored"}', None),
        (b'{"id":"e","to":"bob","op":"edit","ref_seq":1}', "one of 'text' and 'data'"),
        (b'{"id":"e","to":"bob","op":"recall"}', "needs 'ref_seq'"),
        (b'{"id":"e","to":"bob","op":"recall","ref_seq":0}', "needs 'ref_seq'"),
        (b'{"id":"e","to":"bob","op":"burn","ref_seq":1}', "unknown op"),
        (b'{"id":"e","to":"bob","text":"x","ref_seq":1}', "only allowed with an 'op'"),
    ],
)
def test_parse_send_with_ops(payload: bytes, problem: str | None) -> None:
    if problem is None:
        request = parse_send(payload, limits=LIMITS)
        assert request.op is not None
        if request.op != "edit":
            assert (request.text, request.data) == (None, None)
        return
    with pytest.raises(RequestRejected) as caught:
        parse_send(payload, limits=LIMITS)
    assert problem in caught.value.message


def test_op_rules() -> None:
    assert op_problem("edit", _record(), sender="alice", ref="x") is None
    missing = op_problem("edit", None, sender="alice", ref="x")
    assert missing is not None
    assert missing.code is ErrorCode.NOT_FOUND
    other = op_problem("recall", _record(sender="bob"), sender="alice", ref="x")
    assert other is not None
    assert other.code is ErrorCode.FORBIDDEN
    twice = op_problem("edit", _record(kind="recall"), sender="alice", ref="x")
    assert twice is not None
    assert twice.code is ErrorCode.BAD_REQUEST
    assert op_problem("delete", _record(sender="bob"), sender="alice", ref="x") is None  # anyone's, for me


def test_direct_targets() -> None:
    assert direct_target("alice", "d:alice:bob", ref=None) == ConvTarget(conv="d:alice:bob", peer="bob")
    assert direct_target("alice", "g:team", ref=None) is None
    with pytest.raises(RequestRejected) as caught:
        direct_target("carol", "d:alice:bob", ref="r")
    assert (caught.value.code, caught.value.ref) == (ErrorCode.FORBIDDEN, "r")
    with pytest.raises(RequestRejected):
        direct_target("alice", "d:bob:alice", ref=None)  # not sorted: not a conversation id


def test_read_receipt_targets() -> None:
    direct = read_receipt(ConvTarget(conv="d:alice:bob", peer="bob"), user="alice", seq=3)
    assert direct is not None
    assert direct.topic == "im/v1/u/bob/receipt"
    group = read_receipt(ConvTarget(conv="g:team", group="team"), user="alice", seq=3)
    assert group is not None
    assert group.topic == "im/v1/g/team/receipt"
    assert read_receipt(ConvTarget(conv="d:alice:alice", peer="alice"), user="alice", seq=3) is None


def test_owner_successor_prefers_admins() -> None:
    members = {"zed": Role.OWNER, "bob": Role.MEMBER, "carl": Role.ADMIN, "amy": Role.MEMBER}
    assert successor(GroupRecord(group_id="g", name="g", members=members), "zed") == "carl"
    members["carl"] = Role.MEMBER
    assert successor(GroupRecord(group_id="g", name="g", members=members), "zed") == "amy"
    assert successor(GroupRecord(group_id="g", name="g", members={"zed": Role.OWNER}), "zed") is None
