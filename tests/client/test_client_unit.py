"""Pure parts of the client SDK: decoding, ack matching, dedup window, back-off, buffer."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqim.client import (
    ClientError,
    ConnectError,
    DedupWindow,
    Incoming,
    IncomingBuffer,
    InvalidRequest,
    MqimClient,
    PendingAcks,
    SendError,
    ack_of,
    backoff_delay,
    decode,
    error_of,
    new_message_id,
)
from mqim.protocol import Ack, Channel, DeliveredMessage, ErrorCode, ErrorPayload, is_valid_id

MSG = {
    "v": 1,
    "conv": "d:alice:bob",
    "seq": 3,
    "server_id": "s1",
    "id": "c-1",
    "from": "alice",
    "ts": 5,
    "text": "hi",
}
ACK = {"v": 1, "id": "c-1", "conv": "d:alice:bob", "seq": 3, "server_id": "s1", "ts": 5}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


# -- decode ----------------------------------------------------------------------------------------


def test_decode_direct_message() -> None:
    got = decode("im/v1/u/bob/msg", raw(MSG))
    assert (got.channel, got.owner, got.kind, got.problem) == (Channel.INBOX, "bob", "msg", None)
    assert isinstance(got.payload, DeliveredMessage)
    assert got.message is got.payload
    assert got.payload.sender == "alice"
    assert got.to_dict() == {"topic": "im/v1/u/bob/msg", "kind": "msg", "payload": MSG}


def test_decode_group_message_and_new_fields_are_tolerated() -> None:
    payload = {**MSG, "conv": "g:team", "added_later": True}
    got = decode("im/v1/g/team/msg", raw(payload))
    assert got.channel is Channel.GROUP
    assert got.message is not None
    assert got.message.conv == "g:team"


def test_decode_other_kinds_as_dicts() -> None:
    got = decode("im/v1/u/bob/event", raw({"v": 1, "type": "sync_needed"}), retain=True)
    assert got.payload == {"v": 1, "type": "sync_needed"}
    assert got.message is None
    assert got.to_dict()["retain"] is True
    presence = decode("im/v1/presence/alice", raw({"status": "online"}))
    assert (presence.channel, presence.owner, presence.kind) == (Channel.PRESENCE, "alice", "")


@pytest.mark.parametrize(
    ("topic", "payload", "problem"),
    [
        ("im/v1/u/bob/msg", b"\xff\xfe", "not JSON"),
        ("im/v1/u/bob/msg", b"{", "not JSON"),
        ("im/v1/u/bob/msg", b"[1, 2]", "not a JSON object"),
        ("im/v1/u/bob/msg", raw({"v": 1, "text": "no conv"}), "invalid msg payload"),
    ],
)
def test_decode_never_raises(topic: str, payload: bytes, problem: str) -> None:
    got = decode(topic, payload)
    assert got.problem is not None
    assert problem in got.problem
    assert got.raw == payload
    assert "problem" in got.to_dict()


def test_decode_foreign_topic() -> None:
    got = decode("other/topic", raw({"a": 1}))
    assert (got.channel, got.owner, got.kind, got.payload) == (None, None, "", {"a": 1})


def test_ack_and_error_only_on_own_inbox() -> None:
    ack = ack_of(decode("im/v1/u/alice/ack", raw(ACK)), "alice")
    assert ack == Ack(id="c-1", conv="d:alice:bob", seq=3, server_id="s1", ts=5)
    assert ack_of(decode("im/v1/u/alice/ack", raw(ACK)), "bob") is None
    assert ack_of(decode("im/v1/u/alice/msg", raw(MSG)), "alice") is None
    assert ack_of(decode("im/v1/u/alice/ack", raw({"id": "x"})), "alice") is None
    err = {"v": 1, "ref": "c-1", "code": "forbidden", "message": "no"}
    parsed = error_of(decode("im/v1/u/alice/error", raw(err)), "alice")
    assert parsed is not None
    assert (parsed.ref, parsed.code) == ("c-1", ErrorCode.FORBIDDEN)
    assert error_of(decode("im/v1/u/alice/error", raw(err)), "bob") is None
    assert error_of(decode("im/v1/u/alice/error", raw({**err, "code": "weird"})), "alice") is None


# -- ack matching ----------------------------------------------------------------------------------


async def test_pending_acks_match_by_id() -> None:
    pending = PendingAcks()
    first, second = pending.register("c-1"), pending.register("c-2")
    assert len(pending) == 2
    assert "c-1" in pending
    with pytest.raises(ValueError, match="already waiting"):
        pending.register("c-1")
    other = Ack(id="c-9", conv="d:a:b", seq=1, server_id="s", ts=1)
    assert not pending.resolve_ack(other)
    ack = Ack(id="c-2", conv="d:a:b", seq=2, server_id="s", ts=1)
    assert pending.resolve_ack(ack)
    assert not pending.resolve_ack(ack)  # a duplicate ack completes nothing more
    assert await second is ack
    assert not first.done()
    pending.discard("c-2")
    assert "c-2" not in pending


async def test_pending_error_fails_the_matching_send() -> None:
    pending = PendingAcks()
    future = pending.register("c-1")
    assert not pending.resolve_error(ErrorPayload(ref=None, code=ErrorCode.BAD_REQUEST, message="?"))
    assert not pending.resolve_error(ErrorPayload(ref="c-2", code=ErrorCode.BAD_REQUEST, message="?"))
    refusal = ErrorPayload(ref="c-1", code=ErrorCode.RATE_LIMITED, message="slow down")
    assert pending.resolve_error(refusal)
    with pytest.raises(SendError) as info:
        await future
    assert info.value.error == refusal
    assert info.value.code is ErrorCode.RATE_LIMITED
    assert "rate_limited: slow down" in str(info.value)


async def test_pending_fail_all_and_discard_unawaited() -> None:
    pending = PendingAcks()
    waited, abandoned = pending.register("c-1"), pending.register("c-2")
    pending.fail_all(ClientError("gone"))
    with pytest.raises(ClientError, match="gone"):
        await waited
    # Discarding a failed, never-awaited future must not leave an unretrieved exception.
    pending.discard("c-2")
    assert abandoned.done()
    assert len(pending) == 1


# -- dedup window ----------------------------------------------------------------------------------


def test_dedup_window() -> None:
    window = DedupWindow(max_entries=3)
    assert not window.seen("d:a:b", 1)
    assert window.seen("d:a:b", 1)
    assert not window.seen("g:team", 1)  # same seq, other conversation
    assert not window.seen("d:a:b", 2)
    assert window.seen("d:a:b", 1)  # refreshed: now the newest
    assert not window.seen("d:a:b", 3)  # evicts the oldest, ("g:team", 1)
    assert ("g:team", 1) not in window
    assert ("d:a:b", 1) in window
    assert len(window) == 3
    with pytest.raises(ValueError, match="max_entries"):
        DedupWindow(max_entries=0)


@given(
    keys=st.lists(st.tuples(st.sampled_from(["d:a:b", "g:x", "g:y"]), st.integers(1, 50)), max_size=300),
    size=st.integers(1, 40),
)
def test_dedup_window_is_bounded_and_exact_within_window(keys: list[tuple[str, int]], size: int) -> None:
    window = DedupWindow(max_entries=size)
    recent: list[tuple[str, int]] = []  # a model: most recently seen last
    for key in keys:
        assert window.seen(*key) == (key in recent)
        if key in recent:
            recent.remove(key)
        recent.append(key)
        recent = recent[-size:]
        assert len(window) <= size
        assert len(window) == len(recent)


# -- back-off ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, base=0.5, cap=4.0, jitter=0.0) for n in range(1, 8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert backoff_delay(10_000, base=0.5, cap=4.0, jitter=0.0) == 4.0


def test_backoff_jitter_only_shortens() -> None:
    assert backoff_delay(3, base=1.0, cap=10.0, jitter=0.5, rand=lambda: 0.0) == 4.0
    assert backoff_delay(3, base=1.0, cap=10.0, jitter=0.5, rand=lambda: 0.999) == pytest.approx(2.002)


@given(attempt=st.integers(1, 10**6), jitter=st.floats(0.0, 1.0))
def test_backoff_is_bounded(attempt: int, jitter: float) -> None:
    delay = backoff_delay(attempt, base=0.2, cap=10.0, jitter=jitter)
    assert 0.0 <= delay <= 10.0


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.1), (1, -0.1), (1, 1.5)])
def test_backoff_rejects_bad_arguments(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        backoff_delay(attempt, base=1.0, cap=2.0, jitter=jitter)


# -- incoming buffer -------------------------------------------------------------------------------


def item(n: int) -> Incoming:
    return decode("im/v1/u/bob/event", raw({"n": n}))


async def test_buffer_fifo_and_close() -> None:
    buffer = IncomingBuffer(max_items=10)
    for n in range(3):
        assert await buffer.put(item(n))
    await buffer.close()
    assert buffer.closed
    got = [await buffer.get() for _ in range(3)]
    assert [g.payload for g in got if g is not None] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await buffer.get() is None  # drained and closed
    assert not await buffer.put(item(9))  # dropped once closed


async def test_buffer_close_with_error_after_drain() -> None:
    buffer = IncomingBuffer(max_items=2)
    await buffer.put(item(1))
    await buffer.close(ConnectError("down"))
    assert await buffer.get() is not None
    with pytest.raises(ConnectError, match="down"):
        await buffer.get()


async def test_buffer_put_waits_while_full() -> None:
    buffer = IncomingBuffer(max_items=1)
    await buffer.put(item(1))
    blocked = asyncio.create_task(buffer.put(item(2)), name="test-put")
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done()
    assert len(buffer) == 1
    first = await buffer.get()
    assert first is not None
    assert first.payload == {"n": 1}
    assert await blocked
    second = await buffer.get()
    assert second is not None
    assert second.payload == {"n": 2}


async def test_buffer_get_wakes_on_close() -> None:
    buffer = IncomingBuffer(max_items=1)
    waiter = asyncio.create_task(buffer.get(), name="test-get")
    await asyncio.sleep(0)
    await buffer.close()
    assert await waiter is None


# -- client arguments (no broker needed) -----------------------------------------------------------


def test_message_ids_fit_the_id_rule() -> None:
    ids = {new_message_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_valid_id(i) for i in ids)


async def test_client_validates_before_any_network() -> None:
    with pytest.raises(InvalidRequest, match="invalid user id"):
        MqimClient(user="not valid", password="x")
    with pytest.raises(ValueError, match="ack_timeout"):
        MqimClient(user="bob", password="x", ack_timeout=0)
    client = MqimClient(user="bob", password="x")
    assert client.client_id.startswith("bob-")
    assert not client.connected
    with pytest.raises(InvalidRequest, match="exactly one of 'to' and 'group'"):
        await client.send(text="to nobody")
    with pytest.raises(InvalidRequest):
        await client.send(to="alice")  # no content
    with pytest.raises(InvalidRequest):
        await client.send(to="alice", text="x", id="bad id")
    with pytest.raises(InvalidRequest, match="unknown request kind"):
        await client.publish("dance", {})
    with pytest.raises(ClientError, match="not connected"):
        await client.send(to="alice", text="hi")
    with pytest.raises(ClientError, match="receive=False"):
        await anext(MqimClient(user="bob", password="x", receive=False).messages())


async def test_connect_refused_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        # Bound but not listening: connections are refused.
        client = MqimClient(port=port, user="bob", password="x", connect_timeout=5)
        with pytest.raises(ConnectError, match="cannot connect"):
            await client.connect()
