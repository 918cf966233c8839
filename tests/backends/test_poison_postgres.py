"""Poison isolation on PostgreSQL: one corrupt row costs only its own job.

The fuzzer enqueues healthy jobs and one victim, overwrites one column of the
victim with garbage through SQL (every column of ``jobs`` in turn, with what
its type admits: JSON of the wrong shape, out-of-range and non-finite
numbers, unknown text; and NULL or values a constraint refuses, which the
table turns away), then runs a worker: every healthy job completes, the
worker survives, the victim ends completed or dead with an honest error (or
stays pending where the garbage itself says so: a queue nobody serves, a due
time that never comes), and the operator commands all answer. The named
tests after it pin each defect found on this store.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import asyncpg
import pytest

from asyncq import JobState
from asyncq._records import ErrorKind, JobRecord
from asyncq.backends._poison import UNREADABLE_NAME
from asyncq.backends.postgres import PostgresBackend
from asyncq.testing import run_until_idle
from ops_app import Note, app, asyncq, note
from ops_app import lent as ops_lent

from . import _records as r

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

APP = "ops_app:app"
BOUND = 60.0
#: Longer than any test waits, so only a notification can end a wait in time.
NO_POLL = 120.0
HEALTHY = 12
PENDING = {JobState.QUEUED, JobState.SCHEDULED, JobState.FAILED}


@pytest.fixture
async def backend(make_postgres: Callable[..., PostgresBackend]) -> PostgresBackend:
    made = make_postgres(migrate=True, poll_interval=0.5)
    with anyio.fail_after(BOUND):
        await made.open()
    return made


@pytest.fixture
async def lent(
    backend: PostgresBackend, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[PostgresBackend]:
    """``backend`` behind ``ops_app.app``, for its worker and the CLI."""
    async with ops_lent(backend, monkeypatch):
        yield backend


async def corrupt(
    admin: asyncpg.Connection[Any], backend: PostgresBackend, job_id: str, column: str, value: str
) -> str:
    """Set ``column`` of the job to the SQL expression ``value``; return the job's id after."""
    new_id = await admin.fetchval(
        f'UPDATE "{backend.schema}".jobs SET {column} = {value} WHERE id = $1 RETURNING id', job_id
    )
    assert isinstance(new_id, str)
    return new_id


def last_kind(job: JobRecord) -> ErrorKind | None:
    return job.errors[-1].kind if job.errors else None


# -- the fuzzer -------------------------------------------------------------------------------

#: What the victim may end as: completed, dead with one of these error kinds, or pending.
COMPLETED = "completed"
UNDECODABLE = "undecodable"
PENDING_STILL = "pending"
#: completed, and its result expired at once (a result TTL below zero says so)
EXPIRED = "expired"


@dataclass(frozen=True)
class Garbage:
    column: str
    #: an SQL expression
    value: str
    #: ``COMPLETED``, ``PENDING_STILL``, or the kind of the victim's last error when dead
    ends: tuple[str, ...]
    #: the table refuses the value (a constraint, a type): the victim stays healthy
    refused: bool = False

    def __str__(self) -> str:
        return f"{self.column}={self.value[:30]}"


GARBAGE = [
    # The id, changed: the job is the same job under another name.
    Garbage("id", "'garbage id ' || repeat('z', 1500)", (COMPLETED,)),
    Garbage("id", "NULL", (COMPLETED,), refused=True),
    Garbage("name", "'no such job'", ("unknown_job",)),
    Garbage("name", "repeat('n', 100000)", ("unknown_job",)),
    Garbage("queue", "'nowhere'", (PENDING_STILL,)),
    Garbage("payload", "'\\xc1deadbeef'::bytea", ("decode",)),
    Garbage("payload", "''::bytea", ("decode",)),
    Garbage("payload", "decode(repeat('ff', 1000000), 'hex')", ("decode",)),
    Garbage("state", "'bogus'", (COMPLETED,), refused=True),
    Garbage("state", "NULL", (COMPLETED,), refused=True),
    # Active without a lease time: recovered, then run.
    Garbage("state", "'active'", (COMPLETED,)),
    Garbage("state", "'failed'", (COMPLETED,)),
    Garbage("priority", "2147483647", (COMPLETED,)),
    Garbage("priority", "'x'", (COMPLETED,), refused=True),
    Garbage("attempts", "2147483647", (COMPLETED,)),
    Garbage("attempts", "-2147483648", (COMPLETED,)),
    Garbage("max_attempts", "-1", (COMPLETED,)),
    Garbage("max_attempts", "NULL", (COMPLETED,), refused=True),
    Garbage("timeout", "'NaN'", (UNDECODABLE,)),
    Garbage("timeout", "'-Infinity'", (COMPLETED, "timeout")),
    Garbage("key", "repeat('k', 2000)", (COMPLETED,)),
    Garbage("key_held", "true", (COMPLETED,), refused=True),
    Garbage("result_ttl", "'NaN'", (COMPLETED,)),
    Garbage("result_ttl", "'-Infinity'", (EXPIRED,)),
    Garbage("enqueued_at", "'NaN'", (COMPLETED,)),
    Garbage("enqueued_at", "NULL", (COMPLETED,), refused=True),
    Garbage("scheduled_at", "'-Infinity'", (COMPLETED,)),
    Garbage("scheduled_at", "'NaN'", (PENDING_STILL,)),
    Garbage("started_at", "'Infinity'", (COMPLETED,)),
    Garbage("finished_at", "'NaN'", (COMPLETED,)),
    Garbage("expires_at", "0", (COMPLETED,)),
    Garbage("lease_expires_at", "'-Infinity'", (COMPLETED,)),
    Garbage("worker", "repeat('w', 10000)", (COMPLETED,)),
    Garbage("token", "'not a claim of anyone'", (COMPLETED,)),
    Garbage("result", "'\\x00ff'::bytea", (COMPLETED,)),
    Garbage("errors", "'{\"x\": 1}'::jsonb", (UNDECODABLE,)),
    Garbage("errors", "'null'::jsonb", (UNDECODABLE,)),
    Garbage("errors", '\'[{"kind": "nope", "message": 5}]\'::jsonb', (UNDECODABLE,)),
    Garbage("errors", "(repeat('[', 5000) || repeat(']', 5000))::jsonb", (UNDECODABLE,)),
    Garbage("errors", "NULL", (COMPLETED,), refused=True),
    Garbage("progress", "'NaN'", (COMPLETED,)),
    Garbage("cancel_requested", "true", (COMPLETED,)),
    Garbage("headers", "'[1, 2]'::jsonb", (UNDECODABLE,)),
    Garbage("headers", "'{\"traceparent\": 5}'::jsonb", (UNDECODABLE,)),
    Garbage("headers", "'\"text\"'::jsonb", (UNDECODABLE,)),
    Garbage("progress_detail", "'{\"deep\": [1, 2]}'::jsonb", (COMPLETED,)),
    Garbage("meta", "'[1, 2]'::jsonb", (UNDECODABLE,)),
    Garbage("meta", '\'{"tenant": "acme"}\'::jsonb', (COMPLETED,)),
    Garbage("logs", "ARRAY['not json']", (UNDECODABLE,)),
    Garbage("logs", 'ARRAY[\'[1.5, 1, "info", "hand-written"]\']', (COMPLETED,)),
    Garbage("logs_dropped", "NULL", (COMPLETED,), refused=True),
    Garbage("key_ttl", "'NaN'", (COMPLETED,)),
    # Dependencies: ids of jobs that do not exist are no harm to the job itself.
    Garbage("parents", "ARRAY['no such parent']", (COMPLETED,)),
    Garbage("children", "ARRAY['no such child', NULL]", (COMPLETED,)),
    Garbage("after_failure", "'bogus'", (COMPLETED,)),
    Garbage("limits", "'[1, 2]'::jsonb", (UNDECODABLE,)),
    Garbage("limits", "'\"text\"'::jsonb", (UNDECODABLE,)),
    # Set aside on a limit slot nothing lets out: it waits, readable and counted.
    Garbage("held_by", "'nowhere'", (PENDING_STILL,)),
    Garbage("rate_paid", "true", (COMPLETED,)),
    Garbage("rate_paid", "NULL", (COMPLETED,), refused=True),
    Garbage("circuit", "'[1]'::jsonb", (UNDECODABLE,)),
    Garbage("circuit", "'\"text\"'::jsonb", (UNDECODABLE,)),
    # A hold on a job without limits: nothing holds it (the claim clears both).
    Garbage("held_until", "'NaN'", (COMPLETED,)),
    Garbage("held_until", "'Infinity'", (COMPLETED,)),
    Garbage("hold", "repeat('h', 10000)", (COMPLETED,)),
]


async def test_the_fuzzer_covers_every_column(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    columns = await postgres_admin.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = 'jobs'",
        backend.schema,
    )
    assert {row[0] for row in columns} == {garbage.column for garbage in GARBAGE}


@pytest.mark.parametrize("garbage", GARBAGE, ids=str)
async def test_one_corrupt_column_costs_only_its_own_job(
    lent: PostgresBackend,
    postgres_admin: asyncpg.Connection[Any],
    garbage: Garbage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A name no worker knows is dead at once only without a grace period for rolling deploys.
    monkeypatch.setattr(app, "unknown_job_grace", 0.0)
    with anyio.fail_after(BOUND):
        healthy = [(await note.enqueue(Note(str(i)))).id for i in range(HEALTHY // 2)]
        victim = (await note.enqueue(Note("victim"))).id
        healthy += [(await note.enqueue(Note(str(i)))).id for i in range(HEALTHY // 2)]
        if garbage.refused:
            with pytest.raises(asyncpg.PostgresError):
                await corrupt(postgres_admin, lent, victim, garbage.column, garbage.value)
        else:
            victim = await corrupt(postgres_admin, lent, victim, garbage.column, garbage.value)

        await lent.recover()  # what a worker's maintenance does, before this burst ends
        worker = await run_until_idle(app, timeout=BOUND / 2)

        for job_id in healthy:
            job = await lent.get(job_id)
            assert job is not None
            assert job.state is JobState.COMPLETED, job
        assert worker.processed >= HEALTHY
        ends = (COMPLETED,) if garbage.refused else garbage.ends
        found = await lent.get(victim)
        if found is None:
            assert EXPIRED in ends
            state = await postgres_admin.fetchval(
                f'SELECT state FROM "{lent.schema}".jobs WHERE id = $1', victim
            )
            assert state == "completed"
            return
        if found.state is JobState.COMPLETED:
            assert COMPLETED in ends
        elif found.state in PENDING:
            assert PENDING_STILL in ends
        else:
            assert found.state is JobState.DEAD, found
            assert str(last_kind(found)) in ends, found.errors

        assert victim in {job.id for job in await lent.list_jobs(limit=100)}
        counts = dict.fromkeys(JobState, 0)
        for stats in await lent.stats():
            for state, n in stats.counts.items():
                counts[state] += n
        assert counts[JobState.COMPLETED] >= HEALTHY
        assert counts[JobState.ACTIVE] == 0
        await operator_commands_answer(victim, unreadable=found.name == UNREADABLE_NAME)


async def operator_commands_answer(victim: str, *, unreadable: bool) -> None:
    """``jobs``, ``job`` and ``status``, as text and JSON, all exit 0 and show the victim."""
    listed = await asyncq("jobs", APP, "--limit", "100")
    assert listed.exit_code == 0, listed.output
    assert (UNREADABLE_NAME in listed.stdout) is unreadable
    as_json = await asyncq("jobs", APP, "--limit", "100", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert victim in {job["id"] for job in json.loads(as_json.stdout)}
    shown = await asyncq("job", APP, victim)
    assert shown.exit_code == 0, shown.output
    shown_json = await asyncq("job", APP, victim, "--json")
    assert shown_json.exit_code == 0, shown_json.output
    assert json.loads(shown_json.stdout)["id"] == victim
    for extra in ((), ("--json",)):
        status = await asyncq("status", APP, *extra)
        assert status.exit_code == 0, status.output


# -- the defects, one by one -------------------------------------------------------------------


async def claim_all(backend: PostgresBackend, limit: int = 100) -> list[Any]:
    return await backend.claim([r.QUEUE], limit, worker="w", lease_for=60)


async def stored(admin: asyncpg.Connection[Any], backend: PostgresBackend, job_id: str) -> Any:
    return await admin.fetchrow(
        "SELECT state, key_held, finished_at, token, errors::text AS errors"
        f' FROM "{backend.schema}".jobs WHERE id = $1',
        job_id,
    )


@pytest.mark.parametrize(
    ("column", "value"),
    [("errors", "'{\"x\": 1}'::jsonb"), ("headers", '\'["not", "a", "map"]\'::jsonb')],
)
async def test_a_claim_takes_a_record_of_the_wrong_json_shape_aside_and_leases_the_rest(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any], column: str, value: str
) -> None:
    """Before: the claim committed, then raised ValidationError: the worker crashed
    with the whole batch leased, and every restart did it again."""
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(5)]
        await backend.enqueue(jobs)
        await corrupt(postgres_admin, backend, jobs[2].id, column, value)
        leases = await claim_all(backend)
        assert sorted(lease.job.id for lease in leases) == sorted(
            job.id for job in jobs if job.id != jobs[2].id
        )
        row = await stored(postgres_admin, backend, jobs[2].id)
        assert row["state"] == "dead"
        assert row["finished_at"] is not None
        assert row["token"] is None
        errors = json.loads(row["errors"])
        assert errors[-1]["kind"] == "undecodable"
        assert jobs[2].id in errors[-1]["message"]
        assert "ValidationError" in errors[-1]["message"]
        shown = await backend.get(jobs[2].id)
        assert shown is not None
        assert shown.state is JobState.DEAD
        assert last_kind(shown) is ErrorKind.UNDECODABLE
        assert await claim_all(backend) == []  # nothing left behind, nothing claimed twice


async def test_unreadable_errors_are_replaced_and_readable_ones_kept(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    with anyio.fail_after(BOUND):
        first, second = r.job(max_attempts=2), r.job()
        await backend.enqueue([first, second])
        [lease] = await backend.claim([r.QUEUE], 1, worker="w", lease_for=60)
        assert lease.job.id == first.id
        assert await backend.settle([r.failed(lease, retry_at=0.0)]) == [True]
        await corrupt(postgres_admin, backend, first.id, "headers", "'5'::jsonb")
        await corrupt(postgres_admin, backend, second.id, "errors", "'[{\"kind\": 1}]'::jsonb")
        assert await claim_all(backend) == []
        kept = json.loads((await stored(postgres_admin, backend, first.id))["errors"])
        replaced = json.loads((await stored(postgres_admin, backend, second.id))["errors"])
        assert [e["kind"] for e in replaced] == ["undecodable"]
        assert [e["kind"] for e in kept] == ["error", "undecodable"]
        # The record with readable errors but unreadable headers is shown as a stand-in.
        shown = await backend.get(first.id)
        assert shown is not None
        assert shown.name == UNREADABLE_NAME
        assert shown.state is JobState.DEAD


async def test_a_nan_timeout_is_taken_aside_instead_of_crashing_the_worker(
    lent: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    """Before: ``ValueError: deadline must not be NaN`` ended the worker, the job left active."""
    with anyio.fail_after(BOUND):
        handles = [await note.enqueue(Note(str(i))) for i in range(4)]
        await corrupt(postgres_admin, lent, handles[1].id, "timeout", "'NaN'")
        await run_until_idle(app, timeout=BOUND / 2)
        states = [(await h.info()).state for h in handles]
        assert states == [JobState.COMPLETED, JobState.DEAD] + [JobState.COMPLETED] * 2


async def test_a_claim_of_a_job_at_the_attempts_maximum_does_not_fail_the_batch(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    """Before: ``integer out of range`` failed every claim of the queue, for ever."""
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(3)]
        await backend.enqueue(jobs)
        await corrupt(postgres_admin, backend, jobs[0].id, "attempts", "2147483647")
        leases = await claim_all(backend)
        assert sorted(lease.job.id for lease in leases) == sorted(job.id for job in jobs)


async def test_an_expires_at_on_a_pending_job_neither_hides_nor_loses_it(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    """Before: ``get`` answered None, and prune (or an enqueue of its key) deleted the job."""
    with anyio.fail_after(BOUND):
        job = r.job(key="k")
        await backend.enqueue([job])
        await corrupt(postgres_admin, backend, job.id, "expires_at", "0")
        assert (await backend.get(job.id)) is not None
        assert job.id in {j.id for j in await backend.list_jobs()}
        await backend.prune()
        [again] = await backend.enqueue([r.job(key="k")])
        assert again.id == job.id  # the key is still held by the live job
        [lease] = await claim_all(backend)
        assert lease.job.id == job.id


@pytest.mark.parametrize("lease", ["NULL", "'NaN'"])
async def test_an_active_job_without_a_lease_time_is_recovered(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any], lease: str
) -> None:
    """Before: recover never saw it: the job stayed active for ever."""
    with anyio.fail_after(BOUND):
        job = r.job(max_attempts=2)
        await backend.enqueue([job])
        await claim_all(backend)
        await corrupt(postgres_admin, backend, job.id, "lease_expires_at", lease)
        assert await backend.recover() == 1
        [lease_again] = await claim_all(backend)
        assert lease_again.job.id == job.id


async def test_the_waiter_of_a_job_taken_aside_is_woken(
    make_postgres: Callable[..., PostgresBackend], postgres_admin: asyncpg.Connection[Any]
) -> None:
    waited = make_postgres(migrate=True, poll_interval=NO_POLL)
    with anyio.fail_after(BOUND):
        job = r.job(key="held")
        await waited.enqueue([job])
        await corrupt(postgres_admin, waited, job.id, "errors", "'\"garbage\"'::jsonb")
        ended: list[JobRecord | None] = []

        async def wait() -> None:
            ended.append(await waited.wait_finished(job.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            # Until the wait has registered: the job must end while it waits.
            while not waited._listener._done:  # noqa: ASYNC110 - no event to wait on
                await anyio.sleep(0.01)
            assert await claim_all(waited) == []
        [finished] = ended
        assert finished is not None
        assert finished.state is JobState.DEAD
        assert last_kind(finished) is ErrorKind.UNDECODABLE
        # Its key was freed with it.
        [fresh] = await waited.enqueue([r.job(key="held")])
        assert fresh.id != job.id


async def test_taking_aside_is_guarded_by_the_claims_token_and_never_fails_the_claim(
    backend: PostgresBackend,
    postgres_admin: asyncpg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with anyio.fail_after(BOUND):
        jobs = [r.job() for _ in range(3)]
        await backend.enqueue(jobs)
        await corrupt(postgres_admin, backend, jobs[1].id, "headers", "'[]'::jsonb")
        statement = backend._sql.take_aside
        monkeypatch.setattr(backend._sql, "take_aside", "SELECT 1 / 0")
        leases = await claim_all(backend)
        # The healthy jobs are handed out; the bad one waits, leased, for a later claim.
        assert sorted(lease.job.id for lease in leases) == sorted([jobs[0].id, jobs[2].id])
        row = await stored(postgres_admin, backend, jobs[1].id)
        assert row["state"] == "active"
        # Taking it aside under another claim's token changes nothing.
        dead = await postgres_admin.fetchval(
            statement,
            [jobs[1].id],
            ["someone else's token"],
            ['{"kind": "undecodable", "message": "m", "attempt": 1, "at": 0}'],
            [False],
        )
        assert dead is None
        assert (await stored(postgres_admin, backend, jobs[1].id))["state"] == "active"


async def test_get_list_stats_and_the_cli_answer_for_a_state_no_job_has(
    lent: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    """A table whose state constraint was dropped by hand: the job is shown as unreadable,
    and ``stats`` counts only the states it knows (the job is not counted)."""
    with anyio.fail_after(BOUND):
        handles = [await note.enqueue(Note(str(i))) for i in range(3)]
        await postgres_admin.execute(
            f'ALTER TABLE "{lent.schema}".jobs DROP CONSTRAINT jobs_state_check'
        )
        await corrupt(postgres_admin, lent, handles[0].id, "state", "'bogus'")
        shown = await lent.get(handles[0].id)
        assert shown is not None
        assert (shown.name, shown.state) == (UNREADABLE_NAME, JobState.DEAD)
        assert shown.errors[0].kind is ErrorKind.UNDECODABLE
        assert [j.id for j in await lent.list_jobs()] == [h.id for h in handles]
        [stats] = await lent.stats()
        assert sum(stats.counts.values()) == 2
        await run_until_idle(app, timeout=BOUND / 2)
        assert [(await h.info()).state for h in handles[1:]] == [JobState.COMPLETED] * 2
        await operator_commands_answer(handles[0].id, unreadable=True)
        shown_text = (await asyncq("job", APP, handles[0].id)).stdout
        assert "undecodable" in shown_text or "could not be read" in shown_text


async def test_enqueue_and_cancel_answer_a_stand_in_for_an_unreadable_holder(
    backend: PostgresBackend, postgres_admin: asyncpg.Connection[Any]
) -> None:
    """Before: an enqueue whose key an unreadable job held raised ValidationError."""
    with anyio.fail_after(BOUND):
        holder = r.job(key="k")
        await backend.enqueue([holder])
        await corrupt(postgres_admin, backend, holder.id, "headers", "'1'::jsonb")
        [answer] = await backend.enqueue([r.job(key="k")])
        assert (answer.id, answer.name, answer.state) == (
            holder.id,
            UNREADABLE_NAME,
            JobState.QUEUED,
        )
        cancelled = await backend.cancel(holder.id)
        assert cancelled is not None
        assert (cancelled.id, cancelled.state) == (holder.id, JobState.CANCELLED)


async def test_terminated_connections_flood_no_log_with_tracebacks(
    lent: PostgresBackend, postgres_admin: asyncpg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """``pg_terminate_backend`` of every asyncq connection, again and again, while a worker
    runs and a producer waits: no "Task exception was never retrieved", no traceback."""
    caplog.set_level(logging.WARNING)
    name = f"asyncq:{lent.schema}"
    with anyio.fail_after(BOUND):
        async with app.worker(concurrency=4, poll_interval=0.2):
            handles = []
            for round_ in range(8):
                for i in range(5):
                    text = f"{round_}.{i}"
                    handles.append((text, await note.enqueue(Note(text))))
                await postgres_admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = $1",
                    name,
                )
            for text, handle in handles:
                assert await handle.result(timeout=BOUND / 2) == text
        gc.collect()
        await anyio.lowlevel.checkpoint()
    noisy = [
        record
        for record in caplog.records
        if record.exc_info
        or "never retrieved" in record.getMessage()
        or record.levelno >= logging.ERROR
    ]
    assert noisy == []
