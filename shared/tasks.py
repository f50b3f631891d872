"""Background work for an app's lifetime: a supervised task per unit, a unit of work finished
through a stop, and a stop that really ends a task."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web

log = structlog.get_logger()

T = TypeVar("T")


def background(
    name: str, run: Callable[[web.Application], Awaitable[None]]
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that runs ``run(app)`` as a task for the app's lifetime, then cancels it.

    ``run`` is meant to run forever: if it fails, the failure is logged and ``run`` starts again
    after a second. A task that died silently once stopped a consumer for good while its service
    kept reporting ready."""

    async def supervised(app: web.Application) -> None:
        while True:
            try:
                await run(app)
                log.error("background_task_ended", task=name)
            except Exception:
                log.exception("background_task_failed", task=name)
            await asyncio.sleep(1)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(supervised(app), name=name)
        yield
        await stop(task)

    return ctx


# How long a unit of background work may go on once its service is stopping (see ``finished``).
FINISH_SECONDS = 10


async def finished(work: Awaitable[T]) -> T:
    """Await ``work`` to its end, even when the caller is cancelled meanwhile (its service is
    stopping): then for at most FINISH_SECONDS more, and the cancellation goes on after it.

    For units of background work that are cheaper to finish than to redo: a batch of messages
    cut off before its ack comes back only after the consumer's ack wait (30 s), to whichever
    replica is left."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        deadline = asyncio.get_running_loop().time() + FINISH_SECONDS
        while not task.done() and (left := deadline - asyncio.get_running_loop().time()) > 0:
            with contextlib.suppress(asyncio.CancelledError):  # stop() cancels again meanwhile
                await asyncio.wait([task], timeout=left)
        if not task.done():
            log.warning("unfinished_at_stop", seconds=FINISH_SECONDS)
            task.cancel()
        elif not task.cancelled() and task.exception() is not None:
            log.error("failed_at_stop", error=repr(task.exception()))
        raise


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (nats-py waits with it in
    every fetch) returns a result that arrives together with the cancellation and swallows the
    cancellation (CPython gh-86296, fixed in 3.12). The task then simply goes on, and a shutdown
    that awaited it hung for good — seen in CI. So cancel again until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1)
    if not task.cancelled() and task.exception() is not None:
        log.error("task_failed_at_stop", task=task.get_name(), error=repr(task.exception()))
