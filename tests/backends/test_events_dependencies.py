"""The events of jobs with parents (``enqueue(after=...)``), on every store.

A child stored waiting writes ``waiting`` after its ``enqueued``; the change
that finishes its last parent writes ``released`` (ready) or, for a parent that
ended dead or cancelled, the child's own ``dead`` / ``cancelled`` with the
``dependency`` error, ``by="cascade"``; each in the same atomic step.
"""

from __future__ import annotations

import anyio
import pytest
from msgspec.structs import replace

from asyncq._events import EventKind
from asyncq._records import ErrorKind, JobRecord
from asyncq.backends.base import Backend

from . import _records as r
from .test_conformance import BOUND
from .test_events import claim, kinds, read_all, stream

pytestmark = pytest.mark.anyio


def child(*parents: JobRecord, after_failure: str = "dead", **kw: object) -> JobRecord:
    ids = tuple(p.id for p in parents)
    return replace(r.job(**kw), parents=ids, after_failure=after_failure)  # type: ignore[arg-type]


async def test_a_child_waits_then_is_released_by_its_last_parent(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        first, second = await backend.enqueue([r.job(), r.job()])
        [kid] = await backend.enqueue([child(first, second)])
        for _ in range(2):
            [lease] = await claim(backend, 1)
            assert lease.job.id in (first.id, second.id)
            assert await backend.settle([r.completed(lease)]) == [True]
        history = await events.job_events(kid.id)
        assert kinds(history) == [
            (EventKind.ENQUEUED, None),
            (EventKind.WAITING, None),
            (EventKind.RELEASED, None),
        ]
        assert history[-1].due is None
        # Released after the parent's completion, in the stream's order.
        stream_ids = [e.id for e in await events.job_events(first.id)] + [
            e.id for e in await events.job_events(second.id)
        ]
        read = await read_all(events)
        order = [e.id for e in read]
        assert order.index(history[-1].id) > max(order.index(i) for i in stream_ids)


async def test_a_delayed_child_is_released_with_its_due_time(backend: Backend) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        [parent] = await backend.enqueue([r.job()])
        [kid] = await backend.enqueue([child(parent, delay=3600)])
        [lease] = await claim(backend, 1)
        assert await backend.settle([r.completed(lease)]) == [True]
        released = (await events.job_events(kid.id))[-1]
        assert released.kind is EventKind.RELEASED
        assert released.due is not None
        assert abs(released.due - kid.scheduled_at) < 0.01


@pytest.mark.parametrize("end", ["dead", "cancelled"])
async def test_a_failed_parent_ends_its_child_by_cascade(backend: Backend, end: str) -> None:
    events = stream(backend)
    with anyio.fail_after(BOUND):
        [parent] = await backend.enqueue([r.job(delay=3600 if end == "cancelled" else 0)])
        [kid] = await backend.enqueue([child(parent)])
        [grandchild] = await backend.enqueue([child(kid)])
        if end == "dead":
            [lease] = await claim(backend, 1)
            assert await backend.settle([r.dead(lease)]) == [True]
        else:
            await backend.cancel(parent.id)
        for job, cause in ((kid, parent), (grandchild, kid)):
            history = await events.job_events(job.id)
            expected = EventKind.DEAD if end == "dead" else EventKind.CANCELLED
            assert kinds(history) == [
                (EventKind.ENQUEUED, None),
                (EventKind.WAITING, None),
                (expected, None),
            ]
            last = history[-1]
            assert last.by == "cascade"
            assert last.error is not None
            assert last.error.kind is ErrorKind.DEPENDENCY
            assert cause.id in last.error.message


@pytest.mark.parametrize("ended", ["dead", "completed"])
async def test_a_child_of_a_finished_parent_is_decided_at_enqueue(
    backend: Backend, ended: str
) -> None:
    """A dead parent ends the child at once, by cascade; a completed one lets it be enqueued."""
    events = stream(backend)
    with anyio.fail_after(BOUND):
        [parent] = await backend.enqueue([r.job()])
        [lease] = await claim(backend, 1)
        outcome = r.dead(lease) if ended == "dead" else r.completed(lease)
        assert await backend.settle([outcome]) == [True]
        [kid] = await backend.enqueue([child(parent)])
        history = await events.job_events(kid.id)
        if ended == "dead":
            assert kinds(history) == [(EventKind.ENQUEUED, None), (EventKind.DEAD, None)]
            assert history[-1].by == "cascade"
        else:
            assert kinds(history) == [(EventKind.ENQUEUED, None)]
