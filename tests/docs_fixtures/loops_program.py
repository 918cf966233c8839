"""Given: what docs/integrations.md's program leaves to the reader: imports, produce, consume.

``produce`` enqueues a report through the loop it runs in; ``consume``, in a
thread and a loop of its own, waits for it and takes it off the queue, so the
test Redis keeps nothing.
"""

import asyncio
import threading

from asyncq import App  # noqa: F401 - the program's
from conftest import require_service

require_service("Redis", "redis://127.0.0.1:6379/0", 6379, "ASYNCQ_TEST_REDIS_URL")

QUEUE = "docs-integrations-reports"
produced = threading.Event()
consumed = threading.Event()
removed: list[str] = []
failures: list[BaseException] = []


async def produce() -> None:
    report = app.handle("report", schema=dict, queue=QUEUE)  # noqa: F821 - the program's app
    await report.enqueue({}, key="report")  # one report, however often it runs
    produced.set()


async def consume() -> None:
    try:
        await asyncio.to_thread(produced.wait, 30)
        jobs = await app.admin.jobs(queue=QUEUE)  # noqa: F821
        removed.extend(await app.admin.remove([job.id for job in jobs]))  # noqa: F821
    except BaseException as exc:
        failures.append(exc)
        raise
    finally:
        consumed.set()
