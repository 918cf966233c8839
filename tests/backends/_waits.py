"""Waiting for a job while the test ends it."""

from __future__ import annotations

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
        await anyio.wait_all_tasks_blocked()
        await end()
    (record,) = got
    return record
