"""Job annotations on every store: logged lines, progress detail, metadata.

Runs through the ``backend`` fixture like ``test_conformance``, whose helpers
it uses: each store keeps ``Backend.log``, ``progress(detail=...)`` and
``list_jobs(meta=...)`` to the same contract.
"""

from __future__ import annotations

import time

import anyio
import msgspec
import pytest
from msgspec.structs import replace

from asyncq._annotations import MAX_LOG_LINES, MAX_LOG_MESSAGE, log_line
from asyncq._records import JobState, Lease, LogLine
from asyncq.backends.base import Backend

from . import _records as r
from .test_conformance import BOUND, LONG, claim, claim_one, get

pytestmark = pytest.mark.anyio


def line(lease: Lease, message: str, level: str = "info") -> LogLine:
    return log_line(time.time(), lease.job.attempts, level, message)


# -- logs ---------------------------------------------------------------------------


async def test_log_lines_are_readable_while_the_job_runs(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert (await get(backend, lease.job.id)).logs == ()
        first = line(lease, "resized to 640px")
        assert await backend.log(lease, [first]) is True
        second, third = line(lease, "slow disk", "warning"), line(lease, "ünïcode ✓", "debug")
        assert await backend.log(lease, [second, third]) is True
        stored = await get(backend, lease.job.id)
        assert stored.state is JobState.ACTIVE
        assert stored.logs == (first, second, third)
        assert stored.logs_dropped == 0


async def test_logs_keep_the_last_lines_and_count_the_dropped(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        lines = [line(lease, f"line {i}") for i in range(MAX_LOG_LINES + 7)]
        assert await backend.log(lease, lines[:60]) is True
        assert await backend.log(lease, lines[60:]) is True
        stored = await get(backend, lease.job.id)
        assert stored.logs == tuple(lines[7:])
        assert stored.logs_dropped == 7
        assert await backend.log(lease, [line(lease, "one more")]) is True
        stored = await get(backend, lease.job.id)
        assert len(stored.logs) == MAX_LOG_LINES
        assert stored.logs[0].message == "line 8"
        assert stored.logs[-1].message == "one more"
        assert stored.logs_dropped == 8


async def test_a_long_message_is_cut_and_marked(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.log(lease, [line(lease, "x" * (MAX_LOG_MESSAGE + 500))]) is True
        [kept] = (await get(backend, lease.job.id)).logs
        assert len(kept.message) == MAX_LOG_MESSAGE
        assert kept.message.endswith("…")


async def test_log_is_refused_without_the_lease(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        assert await backend.log(lease, [line(lease, "mine")]) is True
        assert await backend.log(r.forged(lease), [line(lease, "forged")]) is False
        await backend.settle([r.completed(lease)])
        assert await backend.log(lease, [line(lease, "too late")]) is False
        assert [x.message for x in (await get(backend, lease.job.id)).logs] == ["mine"]


async def test_logs_stay_across_a_retry_with_their_attempts(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job(max_attempts=2))
        assert await backend.log(lease, [line(lease, "first try", "error")]) is True
        assert await backend.settle([r.failed(lease, retry_at=time.time())]) == [True]
        assert (await get(backend, lease.job.id)).logs[0].attempt == 1
        second = (await claim(backend, limit=1))[lease.job.id]
        assert second.job.attempts == 2
        assert await backend.log(second, [line(second, "second try")]) is True
        assert await backend.settle([r.completed(second)]) == [True]
        stored = await get(backend, lease.job.id)
        assert [(x.attempt, x.level, x.message) for x in stored.logs] == [
            (1, "error", "first try"),
            (2, "info", "second try"),
        ]


async def test_logs_go_with_the_purged_job(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        record = r.job()
        lease = await claim_one(backend, record)
        assert await backend.log(lease, [line(lease, "kept until purged")]) is True
        assert await backend.progress(lease, 0.5, b'{"step":"x"}') is True
        await backend.settle([r.completed(lease)])
        purged = await backend.purge(states=[JobState.COMPLETED], older_than=time.time() + 60)
        assert purged == 1
        assert await backend.get(record.id) is None
        # The same id stored again starts with nothing left of the first job.
        again = await claim_one(backend, replace(record, enqueued_at=time.time()))
        stored = await get(backend, again.job.id)
        assert stored.logs == ()
        assert stored.logs_dropped == 0
        assert stored.progress_detail is None


# -- progress detail ----------------------------------------------------------------


async def test_progress_detail_is_stored_replaced_and_cleared(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        lease = await claim_one(backend, r.job())
        detail = {"step": "upload", "bytes": 1024, "parts": [1, 2.5, None, True]}
        assert await backend.progress(lease, 0.4, msgspec.json.encode(detail)) is True
        stored = await get(backend, lease.job.id)
        assert (stored.progress, stored.progress_detail) == (0.4, detail)
        assert await backend.progress(lease, 0.6, b'"almost"') is True
        stored = await get(backend, lease.job.id)
        assert (stored.progress, stored.progress_detail) == (0.6, "almost")
        assert await backend.progress(lease, 0.7) is True
        stored = await get(backend, lease.job.id)
        assert (stored.progress, stored.progress_detail) == (0.7, None)
        assert await backend.progress(r.forged(lease), 0.9, b"1") is False
        assert (await get(backend, lease.job.id)).progress_detail is None


# -- metadata -----------------------------------------------------------------------


async def test_meta_is_stored_and_claimed_with_the_job(backend: Backend) -> None:
    meta = {"tenant": "acme", "n": 5, "tags": ["a", "b"], "nested": {"k": 1.5}}
    with anyio.fail_after(BOUND):
        record = replace(r.job(), meta=meta)
        [stored] = await backend.enqueue([record])
        assert stored.meta == meta
        assert (await get(backend, record.id)).meta == meta
        [lease] = await backend.claim([record.queue], 1, worker="w1", lease_for=LONG)
        assert lease.job.meta == meta
        plain = await claim_one(backend, r.job())
        assert plain.job.meta == {}


async def test_meta_filter_pages_through_matching_jobs_only(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        records = [
            replace(r.job(), meta={"tenant": "acme" if i % 3 == 0 else "other", "i": i})
            for i in range(30)
        ]
        records.append(r.job())  # no metadata at all
        await backend.enqueue(records)
        wanted = [job.id for job in records if job.meta.get("tenant") == "acme"]
        found: list[str] = []
        after = None
        while True:
            page = await backend.list_jobs(meta={"tenant": "acme"}, limit=4, after=after)
            if not page:
                break
            assert len(page) <= 4
            found += [job.id for job in page]
            after = page[-1].id
        assert found == wanted
        both = await backend.list_jobs(meta={"tenant": "acme", "i": "6"}, queue=r.QUEUE)
        assert [job.id for job in both] == [records[6].id]
        assert await backend.list_jobs(meta={"tenant": "nobody"}) == []
        queued = await backend.list_jobs(meta={"tenant": "acme"}, state=JobState.QUEUED, limit=2)
        assert [job.id for job in queued] == wanted[:2]


async def test_meta_filter_matches_non_strings_by_their_json_text(backend: Backend) -> None:
    with anyio.fail_after(BOUND):
        numbers = replace(r.job(), meta={"n": 5, "flag": True, "none": None, "f": 0.5})
        text = replace(r.job(), meta={"n": "5", "flag": "yes"})
        await backend.enqueue([numbers, text])

        async def ids(**meta: str) -> list[str]:
            return [job.id for job in await backend.list_jobs(meta=meta)]

        assert await ids(n="5") == [numbers.id, text.id]
        assert await ids(flag="true") == [numbers.id]
        assert await ids(none="null") == [numbers.id]
        assert await ids(f="0.5") == [numbers.id]
        assert await ids(flag="yes", n="5") == [text.id]
        assert await ids(missing="null") == []
