"""Poison isolation on SQLite: garbage in one row costs only its own job.

The fuzzer overwrites each column of one job's row in turn with a value of
the wrong type or shape, straight in the database file, then runs a worker:
every other job completes, the worker ends cleanly, the victim completes (the
garbage was harmless) or is a dead letter, and the operator verbs and the CLI
all answer. The named tests below it are the defects found before the fix.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import pytest
from click.testing import CliRunner, Result

from asyncq import App
from asyncq._records import ErrorKind, JobRecord, JobState
from asyncq.backends._poison import UNREADABLE_NAME
from asyncq.backends.sqlite import SQLiteBackend
from asyncq.backends.sqlite import schema as sqlite_schema
from asyncq.cli import main

from . import _records as r
from ._records import QUEUE

pytestmark = pytest.mark.anyio

BOUND = 20.0
HEALTHY = 12
#: what the CLI loads: an app of its own, which each command opens and closes
APP = f"{__name__}:operated"

# A name no worker knows is dead at once only without a grace period for rolling deploys.
app = App("poison", unknown_job_grace=0)
operated = App("poison-ops")


class Count(msgspec.Struct):
    n: int


@app.job(schema=Count, name="count", queue=QUEUE)
async def count(payload: Count) -> int:
    return payload.n


def _columns() -> list[tuple[str, bool]]:
    """The jobs table's real columns, and whether each may hold NULL."""
    conn = sqlite3.connect(":memory:")
    try:
        sqlite_schema.migrate(conn, 0.0)
        return [
            (name, not notnull)
            for _, name, _, notnull, _, _ in conn.execute("PRAGMA table_info(asyncq_jobs)")
        ]
    finally:
        conn.close()


COLUMNS = _columns()
#: SQL for each kind of garbage: what another writer could leave in any column
GARBAGE = {
    "bytes": "x'c1ff00de4a756e6b'",  # a blob: not a number, not text, not MessagePack
    "text": "'bogus'",  # not a number, not a state, not MessagePack
    "not-utf8": "CAST(x'c328ff61' AS TEXT)",  # text whose bytes sqlite3 cannot decode
    "huge": "9223372036854775807",
    "null": "NULL",
}
CASES = [
    pytest.param(column, kind, id=f"{column}-{kind}")
    for column, nullable in COLUMNS
    for kind in GARBAGE
    if kind != "null" or nullable
]

# The victim may complete (the garbage was harmless), or be a dead letter for
# what its garbage is: an unreadable row, or a payload or name that reads as a
# record but that no handler takes.
DEAD_KINDS = {ErrorKind.UNDECODABLE, ErrorKind.DECODE, ErrorKind.UNKNOWN_JOB}


async def enqueue_jobs(path: Path) -> tuple[list[str], int]:
    """Enqueue the healthy jobs and the victim; return the healthy ids and the victim's rowid."""
    app.use_backend(f"sqlite:///{path}")
    handles = [await count.enqueue(Count(i)) for i in range(HEALTHY + 1)]
    victim = handles[HEALTHY // 2]
    conn = sqlite3.connect(path)
    try:
        (rowid,) = conn.execute(
            "SELECT rowid FROM asyncq_jobs WHERE id = ?", (victim.id,)
        ).fetchone()
    finally:
        conn.close()
    return [h.id for h in handles if h is not victim], rowid


def corrupt(path: Path, rowid: int, column: str, value_sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"UPDATE asyncq_jobs SET {column} = {value_sql} WHERE rowid = ?", (rowid,))
        conn.commit()
    finally:
        conn.close()


def stored(path: Path, rowid: int, column: str) -> Any:
    conn = sqlite3.connect(path)
    conn.text_factory = bytes
    try:
        return conn.execute(
            f"SELECT {column} FROM asyncq_jobs WHERE rowid = ?", (rowid,)
        ).fetchone()[0]
    finally:
        conn.close()


async def cli(*args: str) -> Result:
    """``asyncq ARGS`` on the app, in a worker thread with its own event loop and backend."""
    invoke = functools.partial(CliRunner().invoke, main, list(args), prog_name="asyncq")
    with anyio.fail_after(BOUND):
        return await anyio.to_thread.run_sync(invoke)


async def check_operators_answer(path: Path, victim: JobRecord | None) -> None:
    backend = SQLiteBackend(path)
    await backend.open()
    try:
        listed = await backend.list_jobs(limit=100)
        assert len(listed) == HEALTHY + 1
        (stats,) = [s for s in await backend.stats() if s.queue == QUEUE] or [None]
        assert stats is None or sum(stats.counts.values()) >= HEALTHY
    finally:
        await backend.close()
    url = f"sqlite:///{path}"
    for verb, *rest in (("status",), ("jobs",), *((("job", victim.id),) if victim else ())):
        for json_flag in ((), ("--json",)):
            result = await cli(verb, APP, *rest, "--backend", url, *json_flag)
            assert result.exit_code == 0, (verb, result.output)
            assert not [line for line in result.output.splitlines() if line.startswith("Error:")]
            if json_flag:
                json.loads(result.stdout)


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    yield tmp_path / "jobs.db"
    await app.close()
    app.use_backend(None)


@pytest.mark.parametrize(("column", "kind"), CASES)
async def test_garbage_in_one_column_costs_only_its_job(db: Path, column: str, kind: str) -> None:
    healthy, rowid = await enqueue_jobs(db)
    corrupt(db, rowid, column, GARBAGE[kind])
    backend = await app.backend_opened()
    worker = app.make_worker(concurrency=5, burst=True, poll_interval=0.05)
    with anyio.fail_after(BOUND):
        await worker.run()  # raises if the worker fails
        await backend.recover()  # the worker's maintenance, which a burst may end before

    for job_id in healthy:
        job = await backend.get(job_id)
        assert job is not None
        assert job.state is JobState.COMPLETED, (job_id, job.state, job.errors)

    state = stored(db, rowid, "state")
    job_id = stored(db, rowid, "id")
    victim = (
        await backend.get(job_id.decode())
        if isinstance(job_id, bytes) and job_id.isascii()
        else None
    )
    if column == "queue" and kind in ("text", "huge"):
        # Text in place of the queue name moves the job to a queue no worker here
        # serves: it waits there, readable, and the operator sees that queue.
        assert state == b"queued"
        assert victim is not None
        shown = {s.queue: s for s in await backend.stats()}
        assert shown[victim.queue].counts[JobState.QUEUED] == 1
    elif column == "held_by" and kind != "null":
        # Anything in held_by sets the job aside on a limit (flow control): it
        # waits, readable and counted, until that limit lets it out.
        assert state == b"queued"
        assert victim is not None
        assert victim.state is JobState.QUEUED
    else:
        assert state in (b"completed", b"dead"), state
        if victim is not None and victim.state is JobState.DEAD:
            assert victim.errors[-1].kind in DEAD_KINDS, victim.errors
    await check_operators_answer(db, victim)


# -- the defects, one by one ------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(path: Path, **options: Any) -> AsyncIterator[SQLiteBackend]:
    backend = SQLiteBackend(path, **options)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def set_column(path: Path, job_id: str, column: str, value_sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"UPDATE asyncq_jobs SET {column} = {value_sql} WHERE id = ?", (job_id,))
        conn.commit()
    finally:
        conn.close()


async def claim(backend: SQLiteBackend, limit: int = 100) -> list[str]:
    leases = await backend.claim([QUEUE], limit, worker="w", lease_for=60)
    return [lease.job.id for lease in leases]


@contextlib.asynccontextmanager
async def three_with_a_victim(
    tmp_path: Path, column: str, value_sql: str, **options: Any
) -> AsyncIterator[tuple[SQLiteBackend, list[JobRecord]]]:
    """An open backend holding three jobs, the middle one with ``column`` set to ``value_sql``."""
    async with opened(tmp_path / "jobs.db", **options) as backend:
        jobs = await backend.enqueue([r.job() for _ in range(3)])
        set_column(tmp_path / "jobs.db", jobs[1].id, column, value_sql)
        yield backend, jobs


async def test_text_in_attempts_no_longer_crashes_every_claim(tmp_path: Path) -> None:
    # was: TypeError from the claim, in every worker, for ever
    async with three_with_a_victim(tmp_path, "attempts", "'abc'") as (backend, jobs):
        assert await claim(backend) == [jobs[0].id, jobs[2].id]
        victim = await backend.get(jobs[1].id)
        assert victim is not None
        assert (victim.name, victim.state) == (UNREADABLE_NAME, JobState.DEAD)
        assert "attempts" in victim.errors[-1].message


async def test_a_headers_blob_that_does_not_decode_no_longer_stalls_the_queue(
    tmp_path: Path,
) -> None:
    # was: BackendError from every claim: the queue stalled behind one row
    async with three_with_a_victim(tmp_path, "headers", "x'c1'") as (backend, jobs):
        assert await claim(backend) == [jobs[0].id, jobs[2].id]
        assert await claim(backend) == []


async def test_text_that_is_not_utf8_no_longer_fails_every_read(tmp_path: Path) -> None:
    # was: sqlite3 failed the whole fetch, so every claim, get and list failed
    async with three_with_a_victim(tmp_path, "name", "CAST(x'ff' AS TEXT)") as (backend, jobs):
        listed = await backend.list_jobs()
        assert [job.id for job in listed] == [job.id for job in jobs]
        assert listed[1].name == UNREADABLE_NAME
        assert await claim(backend) == [jobs[0].id, jobs[2].id]
        victim = await backend.get(jobs[1].id)
        assert victim is not None
        assert victim.state is JobState.DEAD


async def test_a_text_timeout_no_longer_leaves_its_job_active(tmp_path: Path) -> None:
    # was: the worker crashed on the lease it was handed, and the job stayed active
    path = tmp_path / "jobs.db"
    app.use_backend(f"sqlite:///{path}")
    try:
        handles = [await count.enqueue(Count(i)) for i in range(3)]
        set_column(path, handles[1].id, "timeout", "'soon'")
        with anyio.fail_after(BOUND):
            await app.make_worker(burst=True, poll_interval=0.05).run()
        states = [(await handle.info()).state for handle in handles]
        assert states == [JobState.COMPLETED, JobState.DEAD, JobState.COMPLETED]
        assert stored(path, 2, "state") == b"dead"
    finally:
        await app.close()
        app.use_backend(None)


async def test_a_bogus_state_no_longer_kills_status(tmp_path: Path) -> None:
    # was: ValueError from stats, so `asyncq status` printed a traceback
    async with three_with_a_victim(tmp_path, "state", "'bogus'") as (backend, _):
        (stats,) = await backend.stats()
        assert stats.counts[JobState.QUEUED] == 2
        assert stats.counts[JobState.DEAD] == 1  # as get and list_jobs show it
        status = await cli("status", APP, "--backend", f"sqlite:///{tmp_path / 'jobs.db'}")
        assert status.exit_code == 0, status.output
        assert "Error" not in status.output


async def test_the_cli_shows_the_corrupt_job_instead_of_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with three_with_a_victim(tmp_path, "errors", "x'c1'") as (_, jobs):
        listed = await cli("jobs", APP, "--backend", url)
        assert listed.exit_code == 0, listed.output
        assert UNREADABLE_NAME in listed.stdout
        one = await cli("job", APP, jobs[1].id, "--backend", url, "--json")
        assert one.exit_code == 0, one.output
        shown = json.loads(one.stdout)
        assert (shown["name"], shown["state"]) == (UNREADABLE_NAME, "dead")


# -- taking a job aside ---------------------------------------------------------------------


async def test_a_job_taken_aside_keeps_readable_errors_frees_its_key_and_wakes_waiters(
    tmp_path: Path,
) -> None:
    # a poll interval longer than the bound: only the wakeup can end the wait in time
    async with opened(tmp_path / "jobs.db", poll_interval=BOUND * 2) as backend:
        (first,) = await backend.enqueue([r.job(key="k", max_attempts=2)])
        (lease,) = await backend.claim([QUEUE], 1, worker="w", lease_for=60)
        await backend.settle([r.failed(lease, retry_at=0.0)])
        set_column(tmp_path / "jobs.db", first.id, "progress", "'half'")
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                finished: list[JobRecord | None] = []

                async def wait() -> None:
                    finished.append(await backend.wait_finished(first.id))

                tg.start_soon(wait)
                await anyio.wait_all_tasks_blocked()
                assert await claim(backend) == []
        assert finished[0] is not None
        assert finished[0].state is JobState.DEAD
        conn = sqlite3.connect(tmp_path / "jobs.db")
        try:
            errors, count_, state, token = conn.execute(
                "SELECT errors, error_count, state, token FROM asyncq_jobs WHERE id = ?",
                (first.id,),
            ).fetchone()
        finally:
            conn.close()
        assert (count_, state, token) == (2, "dead", None)
        kinds = [e.kind for e in sqlite_schema._errors_decoder.decode(b"\x92" + errors)]
        assert kinds == [ErrorKind.ERROR, ErrorKind.UNDECODABLE]
        (second,) = await backend.enqueue([r.job(key="k")])
        assert second.id != first.id  # the dead letter no longer holds the key


async def test_unreadable_errors_are_replaced_by_the_one_that_says_so(tmp_path: Path) -> None:
    async with three_with_a_victim(tmp_path, "errors", "x'c1'") as (backend, jobs):
        assert await claim(backend) == [jobs[0].id, jobs[2].id]
        victim = await backend.get(jobs[1].id)
        assert victim is not None
        assert victim.name == jobs[1].name  # the row reads again: only its errors were bad
        assert [e.kind for e in victim.errors] == [ErrorKind.UNDECODABLE]
        assert "c1" in (victim.errors[0].traceback or "")


async def test_a_blob_id_is_taken_aside_by_its_rowid(tmp_path: Path) -> None:
    async with three_with_a_victim(tmp_path, "id", "x'00ff'") as (backend, jobs):
        assert await claim(backend) == [jobs[0].id, jobs[2].id]
        listed = await backend.list_jobs(state=JobState.DEAD)
        assert [(job.id, job.name) for job in listed] == [("x'00ff'", UNREADABLE_NAME)]


async def test_recover_takes_aside_what_no_claim_can_reach(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    async with opened(path) as backend:
        jobs = await backend.enqueue([r.job() for _ in range(4)] + [r.job(delay=60)])
        set_column(path, jobs[0].id, "state", "'bogus'")
        set_column(path, jobs[1].id, "queue", "x'ff'")
        set_column(path, jobs[4].id, "scheduled_at", "'later'")
        assert await backend.recover() == 0  # no lease lapsed
        states = {job.id: stored(path, i + 1, "state") for i, job in enumerate(jobs)}
        assert states == {
            jobs[0].id: b"dead",
            jobs[1].id: b"dead",
            jobs[2].id: b"queued",
            jobs[3].id: b"queued",
            jobs[4].id: b"dead",
        }
        assert await backend.purge(states=[JobState.DEAD], older_than=1e12) == 3


async def test_recover_takes_aside_a_lapsed_job_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    async with opened(path) as backend:
        jobs = await backend.enqueue([r.job(max_attempts=3) for _ in range(3)])
        leases = await backend.claim([QUEUE], 3, worker="w", lease_for=60)
        conn = sqlite3.connect(path)
        try:
            conn.execute("UPDATE asyncq_jobs SET lease_expires_at = 0")
            # one lapsed and unreadable; one whose expiry is garbage: lapsed (never
            # stuck active), and unreadable too
            conn.execute("UPDATE asyncq_jobs SET headers = x'c1' WHERE id = ?", (jobs[0].id,))
            conn.execute(
                "UPDATE asyncq_jobs SET lease_expires_at = 'never' WHERE id = ?", (jobs[1].id,)
            )
            conn.commit()
        finally:
            conn.close()
        assert await backend.recover() == 3
        assert [stored(path, i, "state") for i in (1, 2, 3)] == [b"dead", b"dead", b"queued"]
        # the heartbeat and settle of the others ignore the bad row beside them
        reply = await backend.heartbeat(leases, lease_for=60)
        assert reply.lost == {job.id for job in jobs}


async def test_heartbeat_and_settle_ignore_a_token_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    async with opened(path) as backend:
        await backend.enqueue([r.job() for _ in range(3)])
        leases = await backend.claim([QUEUE], 3, worker="w", lease_for=60)
        set_column(path, leases[1].job.id, "token", "CAST(x'ff' AS TEXT)")
        reply = await backend.heartbeat(leases, lease_for=60)
        assert reply.lost == {leases[1].job.id}
        applied = await backend.settle([r.completed(lease) for lease in leases])
        assert applied == [True, False, True]


async def test_retry_dead_and_key_lookups_work_beside_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    async with opened(path) as backend:
        jobs = await backend.enqueue([r.job(key="a"), r.job(key="b"), r.job()])
        leases = await backend.claim([QUEUE], 3, worker="w", lease_for=60)
        await backend.settle([r.dead(lease) for lease in leases])
        set_column(path, jobs[1].id, "key", "CAST(x'ff' AS TEXT)")
        set_column(path, jobs[2].id, "queue", "x'ff'")
        assert await backend.retry_dead() == [jobs[0].id]
        # a bad holder still holds its key: the producer gets its stand-in
        set_column(path, jobs[0].id, "headers", "x'c1'")
        (holder,) = await backend.enqueue([r.job(key="a")])
        assert (holder.id, holder.name) == (jobs[0].id, UNREADABLE_NAME)
