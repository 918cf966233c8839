"""Waiting for a job while the test ends it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import anyio

from asyncq._records import JobRecord
from asyncq.backends.base import Backend


async def finished_while(
    backend: Backend, job_id: str, end: Callable[[], Awaitable[object]]
) -> JobRecord | None:
    """What ``backend.wait_finished(job_id)`` returns when ``end()`` runs once it is waiting.

    The wait runs in a task of its own and has blocked (registered, read,
    subscribed) before ``end()`` is called.
    """
    got: list[JobRecord | None] = []

    async def wait() -> None:
        got.append(await backend.wait_finished(job_id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await all_blocked()
        await end()
    (record,) = got
    return record


async def all_blocked() -> None:
    """Return once every other task waits on something (a future, a sleep, a thread).

    ``anyio.wait_all_tasks_blocked`` looks again every 0.1 s, which a store
    polling every 0.1 s (SQLite's default) can wake in step with for ever, so
    that it always finds the poller running. This looks again after 3 ms.
    """
    me = asyncio.current_task()
    while True:
        await anyio.sleep(0.003)
        if all(task is me or _waiting(task) for task in asyncio.all_tasks()):
            return


def _waiting(task: asyncio.Task[object]) -> bool:
    waiter = task._fut_waiter  # type: ignore[attr-defined]
    return task.done() or (waiter is not None and not waiter.done())
