"""LogicService with a real SQLite file over InProcessBus, driven by a recording BrokerPort."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mqim.logic import BusClosed, InProcessBus, LogicLimits, LogicService
from mqim.storage import SqliteStorage, Storage
from tests.logic.recording_port import RecordingPort

TS = 1_764_200_000_123
BARRIER = "zed"  # a user whose bad requests mark "everything before was handled"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with SqliteStorage(path=tmp_path / "im.db") as store:
        for user in ("alice", "bob", "carol", BARRIER):
            await store.add_user(user, password="pw-123456")
        await store.add_user("dora", password="pw-123456")
        await store.set_disabled("dora", True)
        yield store


class Harness:
    def __init__(self, port: RecordingPort, bus: InProcessBus, service: LogicService) -> None:
        self.port, self.bus, self.service = port, bus, service
        self._barriers = 0

    def msg(self, sender: str, msg_id: str, to: str, text: str = "hi", **extra: Any) -> None:
        self.port.send(sender, {"v": 1, "id": msg_id, "to": to, "text": text, **extra})

    async def settle(self) -> None:
        """Return once every request routed before this call has been handled and answered.

        The service handles requests in arrival order, so the answer to a request routed last
        proves the earlier ones are done. No sleeping, no timing.
        """
        self._barriers += 1
        self.port.send(BARRIER, {"id": f"barrier-{self._barriers}"}, kind="nope")
        async with asyncio.timeout(10):
            while len(self.port.on(f"im/v1/u/{BARRIER}/error")) < self._barriers:
                await self.port.wait_for(len(self.port.published) + 1)

    def published(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything published except the barrier replies."""
        return [
            (topic, json.loads(payload))
            for topic, payload, _, _ in self.port.published
            if not topic.startswith(f"im/v1/u/{BARRIER}/")
        ]


@asynccontextmanager
async def running(
    storage: Storage, *, max_pending: int = 100_000, limits: LogicLimits | None = None
) -> AsyncIterator[Harness]:
    port = RecordingPort()
    async with InProcessBus(port=port, max_pending=max_pending) as bus:
        service = LogicService(storage=storage, bus=bus, limits=limits, clock=lambda: TS)
        bus.on_overflow = service.reject_overflow
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(service.run(), name="logic-service")
            try:
                yield Harness(port, bus, service)
            finally:
                task.cancel()


async def test_one_message_is_delivered_copied_and_acked_in_order(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-17", "bob", "hi")
        await h.settle()
    delivered = {
        "v": 1,
        "conv": "d:alice:bob",
        "seq": 1,
        "id": "c-17",
        "from": "alice",
        "ts": TS,
        "text": "hi",
    }
    (t1, m1), (t2, m2), (t3, ack) = h.published()
    assert (t1, t2, t3) == ("im/v1/u/bob/msg", "im/v1/u/alice/msg", "im/v1/u/alice/ack")
    server_id = m1.pop("server_id")
    assert m1 == delivered
    assert m2 == {**delivered, "server_id": server_id}
    assert ack == {"v": 1, "id": "c-17", "conv": "d:alice:bob", "seq": 1, "server_id": server_id, "ts": TS}
    assert all(qos == 1 and not retain for _, _, qos, retain in h.port.published)
    stored = await storage.get_messages("d:alice:bob")
    assert [(m.seq, m.client_id, m.sender, m.body) for m in stored] == [(1, "c-17", "alice", {"text": "hi"})]


async def test_seqs_follow_arrival_order_within_and_across_batches(storage: Storage) -> None:
    async with running(storage) as h:
        # Routed without yielding: one batch.
        h.msg("alice", "c-1", "bob", "one")
        h.msg("bob", "b-1", "alice", "two")
        h.msg("alice", "c-2", "bob", "three")
        await h.settle()
        h.msg("alice", "c-3", "bob", "four")
        await h.settle()
    to_bob = h.port.on("im/v1/u/bob/msg")
    assert [(m["seq"], m["id"], m["text"]) for m in to_bob] == [
        (1, "c-1", "one"),
        (2, "b-1", "two"),  # bob's own message, for his other devices
        (3, "c-2", "three"),
        (4, "c-3", "four"),
    ]
    acks = h.port.on("im/v1/u/alice/ack")
    assert [(a["id"], a["seq"]) for a in acks] == [("c-1", 1), ("c-2", 3), ("c-3", 4)]
    assert [(a["id"], a["seq"]) for a in h.port.on("im/v1/u/bob/ack")] == [("b-1", 2)]
    # Per message: deliveries before its ack.
    topics = [t for t, _ in h.published()]
    assert topics[:3] == ["im/v1/u/bob/msg", "im/v1/u/alice/msg", "im/v1/u/alice/ack"]
    stored = await storage.get_messages("d:alice:bob")
    assert [m.seq for m in stored] == [1, 2, 3, 4]


async def test_retry_gets_the_same_ack_and_no_second_delivery(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "bob", "hi")
        await h.settle()
        first = list(h.port.published)
        h.msg("alice", "c-1", "bob", "hi (retry, even with other text)")
        await h.settle()
        h.msg("alice", "c-1", "bob", "hi")
        h.msg("alice", "c-1", "bob", "hi")  # twice in one batch as well
        await h.settle()
    acks = [p for t, p, _, _ in h.port.published if t == "im/v1/u/alice/ack"]
    assert len(acks) == 4
    assert len(set(acks)) == 1  # byte-identical
    assert len(h.port.on("im/v1/u/bob/msg")) == 1
    assert len(h.port.on("im/v1/u/alice/msg")) == 1
    assert h.port.published[: len(first)] == first
    assert len(await storage.get_messages("d:alice:bob")) == 1


async def test_bad_requests_in_a_batch_do_not_affect_their_neighbours(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "bob", "one")
        h.port.send("alice", b'{"id": "c-2", "to": "bob", "text": ')  # broken JSON
        h.port.send("alice", {"id": "c-3", "to": "bob"})  # no content
        h.msg("alice", "c-4", "nobody", "lost?")  # unknown recipient
        h.port.send("alice", {"id": "c-5", "to": "bob", "group": "team", "text": "x"})  # two targets
        h.msg("alice", "c-6", "bob", "two")
        await h.settle()
    assert [(m["seq"], m["id"]) for m in h.port.on("im/v1/u/bob/msg")] == [(1, "c-1"), (2, "c-6")]
    assert [(a["id"], a["seq"]) for a in h.port.on("im/v1/u/alice/ack")] == [("c-1", 1), ("c-6", 2)]
    errors = h.port.on("im/v1/u/alice/error")
    assert [(e["ref"], e["code"]) for e in errors] == [
        (None, "bad_request"),
        ("c-3", "bad_request"),
        ("c-4", "not_found"),
        ("c-5", "bad_request"),
    ]
    assert "not valid JSON" in errors[0]["message"]
    # Replies come in request order.
    mine = ("im/v1/u/alice/ack", "im/v1/u/alice/error")
    refs = [p.get("id", p.get("ref")) for t, p in h.published() if t in mine]
    assert refs == ["c-1", None, "c-3", "c-4", "c-5", "c-6"]


async def test_unknown_or_disabled_recipient_is_not_found(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "ghost")
        h.msg("alice", "c-2", "dora")  # disabled: indistinguishable from missing
        await h.settle()
    errors = h.port.on("im/v1/u/alice/error")
    assert errors == [
        {"v": 1, "ref": "c-1", "code": "not_found", "message": "user 'ghost' not found"},
        {"v": 1, "ref": "c-2", "code": "not_found", "message": "user 'dora' not found"},
    ]
    assert h.published() == [("im/v1/u/alice/error", e) for e in errors]


async def test_recipient_changes_are_seen_after_forget_user(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "erin")
        await h.settle()
        await storage.add_user("erin", password="pw-123456")
        h.service.forget_user("erin")
        h.msg("alice", "c-2", "erin")
        await h.settle()
    assert [e["ref"] for e in h.port.on("im/v1/u/alice/error")] == ["c-1"]
    assert [m["id"] for m in h.port.on("im/v1/u/erin/msg")] == ["c-2"]


async def test_note_to_self_is_stored_and_delivered_once(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "alice", "remember the milk")
        await h.settle()
    topics = [t for t, _ in h.published()]
    assert topics == ["im/v1/u/alice/msg", "im/v1/u/alice/ack"]
    assert h.port.on("im/v1/u/alice/ack")[0]["conv"] == "d:alice:alice"


async def test_unknown_kinds_and_bad_requests_of_new_kinds_get_bad_request(storage: Storage) -> None:
    async with running(storage) as h:
        h.port.send("alice", {"id": "r-1"}, kind="read")
        h.port.send("alice", {"id": "x-1"}, kind="frobnicate")
        h.port.send("alice", {"id": "g-1", "group": "team", "text": "hi"})
        await h.settle()
    errors = h.port.on("im/v1/u/alice/error")
    assert [(e["ref"], e["code"]) for e in errors] == [
        ("r-1", "bad_request"),
        ("x-1", "bad_request"),
        ("g-1", "forbidden"),
    ]
    assert "conv" in errors[0]["message"]
    assert "unknown request kind 'frobnicate'" in errors[1]["message"]
    assert "not a member of group 'team'" in errors[2]["message"]


async def test_oversize_payload_is_too_large_with_ref(storage: Storage) -> None:
    async with running(storage, limits=LogicLimits(max_payload_bytes=200)) as h:
        h.msg("alice", "c-1", "bob", "x" * 300)
        await h.settle()
    assert [(e["ref"], e["code"]) for e in h.port.on("im/v1/u/alice/error")] == [("c-1", "too_large")]


async def test_invalid_uplink_topic_is_dropped_and_the_loop_goes_on(storage: Storage) -> None:
    async with running(storage) as h:
        h.port.route("im/v1/up/not a user!/msg", b"{}")
        h.port.route("im/v1/up/alice/msg/extra", b"{}")
        h.msg("alice", "c-1", "bob")
        await h.settle()
    assert h.service.counters.invalid_topics == 2
    assert [t for t, _ in h.published()] == ["im/v1/u/bob/msg", "im/v1/u/alice/msg", "im/v1/u/alice/ack"]


async def test_overflow_fails_the_receipts_it_cannot_hold(storage: Storage) -> None:
    async with running(storage, max_pending=2) as h:
        # Routed in one go: the bus holds 2, the 3rd and 4th overflow.
        for i in range(1, 5):
            h.msg("alice", f"c-{i}", "bob", f"m{i}")
        await h.port.wait_for(2 * 3)  # two messages, 3 publishes each
        await h.settle()
    assert h.bus.overflowed == 2
    assert [m["id"] for m in h.port.on("im/v1/u/bob/msg")] == ["c-1", "c-2"]
    # Not refused with an error after a PUBACK: never acknowledged, so the senders resend.
    assert h.port.on("im/v1/u/alice/error") == []
    assert [(r.settled, r.failed) for r in h.port.receipts[:4]] == [(1, 0), (1, 0), (0, 1), (0, 1)]
    assert await storage.last_seq("d:alice:bob") == 2


async def test_stored_requests_are_settled_after_the_commit(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "bob")
        h.msg("alice", "c-1", "bob")  # a resend: recognised as a duplicate, settled too
        h.port.send("alice", b"{not json")  # answered bad_request, processed: settled
        await h.settle()
    assert [(r.settled, r.failed) for r in h.port.receipts[:3]] == [(1, 0), (1, 0), (1, 0)]
    assert await storage.last_seq("d:alice:bob") == 1


async def test_storage_failure_holds_requests_and_answers_unavailable_once(storage: Storage) -> None:
    async with running(storage) as h:
        h.msg("alice", "c-1", "bob")
        await h.settle()  # bob is now cached
        await storage.close()
        h.msg("alice", "c-2", "bob")
        h.msg("carol", "k-1", "bob")
        async with asyncio.timeout(10):
            while h.service.counters.held < 6:  # noqa: ASYNC110 - three attempts of both, at least
                await asyncio.sleep(0.02)
        assert h.service.held == 2
    errors = h.port.on("im/v1/u/alice/error") + h.port.on("im/v1/u/carol/error")
    # Told once each, however often retried; the PUBACKs (receipts) never went.
    assert sorted((e["ref"], e["code"]) for e in errors) == [("c-2", "unavailable"), ("k-1", "unavailable")]
    assert [(r.settled, r.failed) for r in h.port.receipts[2:4]] == [(0, 0), (0, 0)]
    assert len(h.port.on("im/v1/u/bob/msg")) == 1


async def test_run_ends_with_bus_closed_when_the_bus_stops(storage: Storage) -> None:
    port = RecordingPort()
    bus = InProcessBus(port=port)
    await bus.start()
    service = LogicService(storage=storage, bus=bus)
    task = asyncio.create_task(service.run(), name="logic-service")
    await asyncio.sleep(0)
    await bus.stop()
    async with asyncio.timeout(10):
        with pytest.raises(BusClosed):
            await task
