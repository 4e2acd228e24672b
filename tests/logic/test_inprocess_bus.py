"""InProcessBus over a recording BrokerPort test double (the broker itself is not in this package)."""

from __future__ import annotations

import asyncio

import pytest

from mqim.logic import BrokerPort, BusClosed, BusUnavailable, Inbound, InProcessBus
from mqim.protocol import UP_FILTER
from tests.logic.recording_port import RecordingPort


def test_recording_port_is_a_broker_port() -> None:
    port: BrokerPort = RecordingPort()
    assert port is not None


async def test_receive_batch_returns_up_to_max_items_in_order() -> None:
    port = RecordingPort()
    async with InProcessBus(port=port) as bus:
        assert port.filter == UP_FILTER
        for i in range(5):
            port.route(f"im/v1/up/alice/msg{i}", b"%d" % i)
        assert bus.pending == 5
        first = await bus.receive_batch(3)
        second = await bus.receive_batch(3)
    assert first == [Inbound(f"im/v1/up/alice/msg{i}", b"%d" % i) for i in range(3)]
    assert second == [Inbound(f"im/v1/up/alice/msg{i}", b"%d" % i) for i in range(3, 5)]


async def test_receive_batch_waits_for_a_message() -> None:
    port = RecordingPort()
    async with InProcessBus(port=port) as bus:
        waiter = asyncio.create_task(bus.receive_batch(10), name="test-receive")
        await asyncio.sleep(0)  # let it block on the empty queue
        assert not waiter.done()
        port.route("im/v1/up/alice/msg", b"{}")
        async with asyncio.timeout(5):
            assert await waiter == [Inbound("im/v1/up/alice/msg", b"{}")]


async def test_overflow_fails_held_requests_and_hands_over_qos0() -> None:
    port = RecordingPort()
    refused: list[tuple[str, bytes]] = []
    async with InProcessBus(port=port, max_pending=2, on_overflow=lambda t, p: refused.append((t, p))) as bus:
        receipts = [port.route("im/v1/up/alice/msg", b"%d" % i) for i in range(3)]
        port.route("im/v1/up/alice/typing", b"3", qos=0)
        assert bus.overflowed == 2
        # A held request that does not fit is failed (its sender resends), never dropped silently.
        assert [(r.settled, r.failed) for r in receipts if r is not None] == [(0, 0), (0, 0), (0, 1)]
        assert refused == [("im/v1/up/alice/typing", b"3")]
        batch = await bus.receive_batch(10)
        assert [m.payload for m in batch] == [b"0", b"1"]
        bus.settle(batch)
        assert [(r.settled, r.failed) for r in receipts[:2] if r is not None] == [(1, 0), (1, 0)]


async def test_stop_fails_unprocessed_requests() -> None:
    port = RecordingPort()
    bus = InProcessBus(port=port)
    await bus.start()
    receipt = port.route("im/v1/up/alice/msg", b"{}")
    await bus.stop()
    assert receipt is not None
    assert receipt.failed == 1


async def test_failing_overflow_callback_does_not_reach_the_broker() -> None:
    port = RecordingPort()

    def explode(topic: str, payload: bytes) -> None:
        raise RuntimeError("boom")

    async with InProcessBus(port=port, max_pending=1, on_overflow=explode) as bus:
        port.route("im/v1/up/alice/msg", b"0", qos=0)
        port.route("im/v1/up/alice/msg", b"1", qos=0)  # must not raise into the "broker"
        assert bus.overflowed == 1


async def test_publish_goes_through_the_port() -> None:
    port = RecordingPort()
    async with InProcessBus(port=port) as bus:
        await bus.publish("im/v1/u/bob/msg", b"x", qos=1)
        await bus.publish("im/v1/presence/bob", b"y", qos=0, retain=True)
    assert port.published == [("im/v1/u/bob/msg", b"x", 1, False), ("im/v1/presence/bob", b"y", 0, True)]


async def test_port_failure_is_translated() -> None:
    port = RecordingPort()
    port.refuse_publishes = True
    async with InProcessBus(port=port) as bus:
        with pytest.raises(BusUnavailable, match="broker says no") as info:
            await bus.publish("im/v1/u/bob/msg", b"x")
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_stop_detaches_and_wakes_a_waiting_receiver() -> None:
    port = RecordingPort()
    bus = InProcessBus(port=port)
    await bus.start()
    waiter = asyncio.create_task(bus.receive_batch(10), name="test-receive")
    await asyncio.sleep(0)
    await bus.stop()
    assert port.callback is None
    async with asyncio.timeout(5):
        with pytest.raises(BusClosed):
            await waiter
    with pytest.raises(BusClosed):
        await bus.publish("im/v1/u/bob/msg", b"x")


async def test_unstarted_bus_is_closed() -> None:
    bus = InProcessBus(port=RecordingPort())
    with pytest.raises(BusClosed):
        await bus.receive_batch(1)
    with pytest.raises(ValueError, match="max_pending"):
        InProcessBus(port=RecordingPort(), max_pending=0)
