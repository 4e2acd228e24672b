"""Cancellation hygiene for loops that await third-party code."""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise `CancelledError` if the current task was asked to cancel and has not complied.

    On Python 3.11, `asyncio.wait_for` (used inside aiomqtt for every publish, subscribe and
    disconnect) drops a cancellation that arrives as its inner future completes, and a library
    may replace a `CancelledError` with its own error while cleaning up. The request still shows
    in `Task.cancelling()`; a loop that checks it after such awaits cannot run on forever.
    (The membership follower's loop, after a Redis or MongoDB read, was one that did.)
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[object]) -> None:
    """Cancel a child task and wait until it is done.

    Its `CancelledError` (the one we asked for) is swallowed; ours is not: if the current task is
    itself being cancelled meanwhile, the cancellation goes on up.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        raise_if_cancelling()
