"""The durable outbox of an outbound bridge: commit before settling, order, bounds, reopen, errors.

Real SQLite files and the broker's real `Hold`; the waiter records what the publisher's
connection would be told.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mqim.bridge import BridgeStorageError, Outbox
from mqim.broker._holds import Hold
from tests.bridge.conftest import eventually


class Publisher:
    """Stands in for the publisher's connection: records how its holds resolved."""

    def __init__(self) -> None:
        self.settled: list[Hold] = []
        self.failed: list[Hold] = []

    def hold_settled(self, hold: Hold) -> None:
        self.settled.append(hold)

    def hold_failed(self, hold: Hold) -> None:
        self.failed.append(hold)

    def hold(self) -> Hold:
        return Hold(waiter=self).take()  # as the hub does before calling the consumer


async def _opened(path: Path, *, max_messages: int = 100, max_bytes: int = 1 << 20) -> Outbox:
    outbox = Outbox(path=path, max_messages=max_messages, max_bytes=max_bytes, name="t")
    await outbox.open()
    return outbox


async def test_settles_after_commit_keeps_order_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bridge-t-outbox.db"
    pub = Publisher()
    outbox = await _opened(path)
    holds = [pub.hold() for _ in range(10)]
    for n, hold in enumerate(holds):
        assert outbox.offer(f"edge/{n}", f"m{n}".encode(), 1, hold)
    assert outbox.count == 10
    assert not pub.settled, "settled before the commit"
    await eventually(lambda: len(pub.settled) == 10)
    assert pub.settled == holds
    assert not pub.failed
    assert [e.payload for e in outbox.ready] == [f"m{n}".encode() for n in range(10)]
    # What a second connection sees: every message is in the file once its hold settled.
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 10

    # The remote confirmed the first four: they leave memory now and the file with the next commit.
    assert outbox.confirm_through(outbox.ready[3].seq) == 4
    assert outbox.count == 6
    assert outbox.offer("edge/10", b"m10", 0, None)  # no hold: QoS 0 or the server's own
    await eventually(lambda: len(outbox.ready) == 7)
    await outbox.close()
    assert not outbox.offer("edge/late", b"x", 1, pub.hold())  # closed: refused, not lost

    again = await _opened(path)
    try:
        assert [(e.topic, e.payload, e.qos) for e in again.ready] == [
            *((f"edge/{n}", f"m{n}".encode(), 1) for n in range(4, 10)),
            ("edge/10", b"m10", 0),
        ]
        assert again.count == 7
        # Sequence numbers go on after the loaded ones, so the order holds across restarts.
        assert again.offer("edge/11", b"m11", 1, pub.hold())
        await eventually(lambda: len(again.ready) == 8)
        assert [e.seq for e in again.ready] == sorted(e.seq for e in again.ready)
        again.confirm_through(again.ready[-1].seq)
        assert again.count == 0
    finally:
        await again.close()
    empty = await _opened(path)
    try:
        assert not empty.ready
    finally:
        await empty.close()


async def test_full_outbox_refuses_and_never_evicts(tmp_path: Path) -> None:
    pub = Publisher()
    outbox = await _opened(tmp_path / "count.db", max_messages=3)
    try:
        accepted = [pub.hold() for _ in range(3)]
        for n, hold in enumerate(accepted):
            assert outbox.offer("t", f"m{n}".encode(), 1, hold)
        refused = pub.hold()
        assert not outbox.offer("t", b"m3", 1, refused)
        # The caller still owns a refused hold (the bridge fails it); the outbox did not touch it.
        assert refused.taken
        await eventually(lambda: len(pub.settled) == 3)
        assert pub.settled == accepted
        assert [e.payload for e in outbox.ready] == [b"m0", b"m1", b"m2"]
        assert not outbox.offer("t", b"m3", 1, None)
        # Room again once the remote confirmed one.
        outbox.confirm_through(outbox.ready[0].seq)
        assert outbox.offer("t", b"m3", 1, pub.hold())
        await eventually(lambda: len(pub.settled) == 4)
        assert [e.payload for e in outbox.ready] == [b"m1", b"m2", b"m3"]
    finally:
        await outbox.close()

    outbox = await _opened(tmp_path / "bytes.db", max_bytes=100)
    try:
        assert outbox.offer("t", b"x" * 60, 1, None)
        assert not outbox.offer("t", b"y" * 60, 1, None)  # 61 + 61 > 100
        assert outbox.offer("t", b"z" * 30, 1, None)
        assert outbox.size == 61 + 31
        await eventually(lambda: len(outbox.ready) == 2)
        outbox.confirm_through(outbox.ready[-1].seq)
        # An empty outbox takes one message of any size: it can never be stuck refusing it.
        assert outbox.offer("t", b"w" * 500, 1, None)
        assert not outbox.offer("t", b"", 1, None)
    finally:
        await outbox.close()


async def test_failed_commit_fails_the_holds(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    pub = Publisher()
    errors: list[BridgeStorageError] = []
    outbox = Outbox(path=path, max_messages=10, max_bytes=1 << 20, name="t", on_error=errors.append)
    await outbox.open()
    try:
        assert outbox.offer("t", b"kept", 1, pub.hold())
        await eventually(lambda: len(pub.settled) == 1)
        # Someone breaks the file under the running bridge: the next commit cannot succeed.
        with sqlite3.connect(path, isolation_level=None) as other:
            other.execute("DROP TABLE outbox")
        lost = pub.hold()
        assert outbox.offer("t", b"lost", 1, lost)
        assert outbox.offer("t", b"qos0", 0, None)
        await eventually(lambda: pub.failed == [lost])
        assert len(errors) == 1
        assert "cannot commit" in str(errors[0])
        assert outbox.lost == 1  # the one without a hold: nobody can send it again
        assert outbox.count == 1  # the committed one stays; the failed ones left
        assert [e.payload for e in outbox.ready] == [b"kept"]
    finally:
        await outbox.close()


async def test_refuses_files_that_are_not_outboxes(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(BridgeStorageError, match="not a bridge outbox"):
        await _opened(other)

    newer = tmp_path / "newer.db"
    outbox = await _opened(newer)
    await outbox.close()
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(BridgeStorageError, match="newer"):
        await _opened(newer)

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(BridgeStorageError, match="cannot open"):
        await _opened(blocked / "outbox.db")
