"""Cancellation helpers: a child's cancellation is swallowed, the caller's never."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mqim._util import cancel_and_wait, raise_if_cancelling


async def test_cancel_and_wait_stops_the_child_quietly() -> None:
    child = asyncio.create_task(asyncio.sleep(60))
    await cancel_and_wait(child)
    assert child.cancelled()


async def test_our_own_cancellation_goes_on_up() -> None:
    stuck = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stuck.set()
            await asyncio.sleep(0.2)  # slow to stop: the parent is cancelled meanwhile
            raise

    async def parent() -> None:
        task = asyncio.create_task(child())
        await asyncio.sleep(0)  # let it start
        await cancel_and_wait(task)

    outer = asyncio.create_task(parent())
    await asyncio.sleep(0)
    await asyncio.wait_for(stuck.wait(), 5)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_raise_if_cancelling_sees_a_swallowed_request() -> None:
    async def swallower() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # what a library might do
            await asyncio.sleep(60)
        try:
            raise_if_cancelling()
        except asyncio.CancelledError:
            return "raised"
        return "kept running"

    task = asyncio.create_task(swallower())
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "raised"
