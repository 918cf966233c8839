"""What the SQLite backend promises beyond the conformance suite.

Several processes share one file without ever claiming a job twice; jobs
survive closing and reopening the file; the schema is versioned and a newer
one is refused; a locked database makes callers wait, not fail; and the hot
statements are answered from indexes.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

import asyncq
from asyncq._records import JobRecord, JobState, Lease, Outcome
from asyncq.backends import Retention, from_url
from asyncq.backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from asyncq.exceptions import BackendError, BackendUnavailable, ConfigurationError

from . import _records as r
from ._records import QUEUE

pytestmark = pytest.mark.anyio

BOUND = 20.0


async def opened(path: str | Path, **options: Any) -> SQLiteBackend:
    backend = SQLiteBackend(path, **options)
    await backend.open()
    return backend


async def claim_all(backend: SQLiteBackend, limit: int = 1000) -> list[Lease]:
    return await backend.claim([QUEUE], limit, worker="w", lease_for=60)


def completed(lease: Lease, result: bytes = r.RESULT) -> Outcome:
    return Outcome(lease.job.id, lease.token, JobState.COMPLETED, result=result)


# -- URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///jobs.db", "jobs.db"),
        ("sqlite:///data/jobs.db", "data/jobs.db"),
        ("sqlite:////var/lib/app/jobs.db", "/var/lib/app/jobs.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite:///with%20space.db", "with space.db"),
    ],
)
def test_from_url_paths(url: str, path: str) -> None:
    backend = from_url(url)
    assert isinstance(backend, SQLiteBackend)
    assert backend.path == path
    assert backend.url == url


def test_from_url_options_from_query_and_keywords() -> None:
    backend = SQLiteBackend.from_url(
        "sqlite:///jobs.db?poll_interval=0.5&busy_timeout=2", busy_timeout=3.0
    )
    assert backend._poll_interval == 0.5
    assert backend._busy_timeout == 3.0


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/jobs.db",
        "postgresql:///jobs.db",
        "sqlite:///jobs.db?poll=1",
        "sqlite:///jobs.db?poll_interval=soon",
    ],
)
def test_from_url_rejects(url: str) -> None:
    with pytest.raises(ConfigurationError):
        SQLiteBackend.from_url(url)


def test_an_unknown_option_lists_the_known_ones_and_no_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        SQLiteBackend.from_url("sqlite:///jobs.db?password=s3cret&poll=1")
    message = str(caught.value)
    assert "unknown option 'password'" in message
    assert (
        "busy_timeout, events, lock_timeout, poll_interval,"
        " retention_cancelled, retention_completed, retention_dead, retention_events"
    ) in message
    assert "s3cret" not in message


def test_retention_defaults_like_every_store() -> None:
    assert SQLiteBackend("jobs.db").retention == Retention()
    assert SQLiteBackend.from_url("sqlite:///jobs.db").retention == Retention()


def test_retention_from_url_keywords_and_object() -> None:
    backend = SQLiteBackend.from_url("sqlite:///jobs.db?retention_completed=60&retention_dead=none")
    assert backend.retention == Retention(completed=60.0, dead=None)
    keyword = SQLiteBackend.from_url(
        "sqlite:///jobs.db?retention_completed=60", retention_completed=5.0
    )
    assert keyword.retention.completed == 5.0
    given = Retention(cancelled=None)
    assert SQLiteBackend.from_url("sqlite:///jobs.db", retention=given).retention is given
    direct = SQLiteBackend("jobs.db", retention=given, retention_dead=7.0)
    assert direct.retention == Retention(dead=7.0, cancelled=None)
    with pytest.raises(ConfigurationError, match=r"'retention_dead'.*seconds"):
        SQLiteBackend.from_url("sqlite:///jobs.db?retention_dead=soon")
    with pytest.raises(ConfigurationError, match="Retention dead"):
        SQLiteBackend("jobs.db", retention_dead=-1.0)
    with pytest.raises(TypeError, match="retention_done"):
        SQLiteBackend("jobs.db", retention_done=1.0)


# -- files, restarts and schema --------------------------------------------------


async def test_memory_database_works() -> None:
    backend = SQLiteBackend.from_url("sqlite:///:memory:")
    await backend.open()
    try:
        with anyio.fail_after(BOUND):
            [job] = await backend.enqueue([r.job()])
            [lease] = await claim_all(backend)
            async with anyio.create_task_group() as tg:
                tg.start_soon(backend.settle, [completed(lease)])
                done = await backend.wait_finished(job.id)
            assert done is not None
            assert done.state is JobState.COMPLETED
            assert done.result == r.RESULT
    finally:
        await backend.close()


async def test_jobs_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with anyio.fail_after(BOUND):
        backend = await opened(path)
        try:
            ready, later, keyed = await backend.enqueue(
                [r.job(), r.job(delay=3600), r.job(key="k", headers={"traceparent": "00-x"})]
            )
            leases = {lease.job.id: lease for lease in await claim_all(backend)}
            failure = Outcome(
                keyed.id,
                leases[keyed.id].token,
                JobState.DEAD,
                error=r.error(leases[keyed.id]),
            )
            await backend.settle([completed(leases[ready.id]), failure])
            await backend.set_paused("other", True)
            before = [await backend.get(job.id) for job in (ready, later, keyed)]
            stats_before = await backend.stats()
        finally:
            await backend.close()

        reopened = await opened(path)
        try:
            assert [await reopened.get(job.id) for job in (ready, later, keyed)] == before
            assert await reopened.stats() == stats_before
            assert before[2] is not None
            assert before[2].errors[0].message == "boom"
        finally:
            await reopened.close()


def read_schema_version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn, conn:
        (value,) = conn.execute(
            "SELECT value FROM asyncq_meta WHERE key = 'schema_version'"
        ).fetchone()
    return int(value)


def write_schema_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE asyncq_meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()


async def test_schema_version_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with anyio.fail_after(BOUND):
        backend = await opened(path)
        await backend.close()
    assert read_schema_version(path) == SCHEMA_VERSION >= 1


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with anyio.fail_after(BOUND):
        await (await opened(path)).close()
        write_schema_version(path, SCHEMA_VERSION + 1)
        backend = SQLiteBackend(path)
        with pytest.raises(ConfigurationError, match="newer asyncq") as caught:
            await backend.open()
        assert f"version {SCHEMA_VERSION + 1}" in str(caught.value)
        with pytest.raises(BackendError, match="closed"):
            await backend.get("x")


async def test_missing_directory_is_a_refusal_not_an_outage(tmp_path: Path) -> None:
    # Waiting cannot create the directory: a worker must not wait for it for ever.
    backend = SQLiteBackend(tmp_path / "missing" / "jobs.db")
    with anyio.fail_after(BOUND), pytest.raises(BackendError, match="missing") as caught:
        await backend.open()
    assert not isinstance(caught.value, BackendUnavailable)
    assert "does not exist" in str(caught.value)


async def test_not_a_database_is_a_backend_error(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"not a database, " * 512)
    backend = SQLiteBackend(path)
    with anyio.fail_after(BOUND), pytest.raises(BackendError) as caught:
        await backend.open()
    assert not isinstance(caught.value, BackendUnavailable)


async def test_use_before_open_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not open"):
        await SQLiteBackend(tmp_path / "jobs.db").get("x")


async def test_drop_leaves_other_tables_and_does_not_create_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with anyio.fail_after(BOUND):
        await SQLiteBackend(path).drop()
        assert not path.exists()  # nothing stored: no file made for the drop
        await (await opened(path)).close()
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("CREATE TABLE mine (x)")
        write_schema_version(path, SCHEMA_VERSION + 1)  # a newer asyncq's tables go too
        await SQLiteBackend(path).drop()
    conn = sqlite3.connect(path)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()
    assert tables == {"mine"}


async def test_waits_leave_no_waiter_behind(tmp_path: Path) -> None:
    backend = await opened(tmp_path / "jobs.db", poll_interval=0.01)
    try:
        with anyio.fail_after(BOUND):
            [job] = await backend.enqueue([r.job(delay=3600)])
            with anyio.move_on_after(0.05):
                await backend.wait_finished(job.id)
            await backend.wait_for_work(["empty"], 0.05)
            async with anyio.create_task_group() as tg:
                tg.start_soon(backend.wait_for_work, ["other"], 60.0)
                tg.start_soon(backend.wait_finished, job.id)
                await anyio.wait_all_tasks_blocked()
                assert len(backend._waiters) == 2
                await backend.set_paused("other", False)  # resuming wakes its queue
                await backend.cancel(job.id)  # finishing wakes its waiters
            assert len(backend._waiters) == 0
    finally:
        await backend.close()


# -- locks -----------------------------------------------------------------------


def hold_write_lock(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def test_locked_database_waits_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    # SQLite's own wait is tiny, so the backend's retries carry the wait.
    backend = await opened(path, busy_timeout=0.01)
    try:
        with anyio.fail_after(BOUND):
            other = hold_write_lock(path)
            stored: list[JobRecord] = []
            done = anyio.Event()

            async def enqueue() -> None:
                stored.extend(await backend.enqueue([r.job()]))
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(enqueue)
                # The lock is held this long on purpose: the enqueue must outlast it.
                await anyio.sleep(0.5)
                assert not done.is_set()
                other.execute("COMMIT")
                other.close()
                await done.wait()
            assert [job.state for job in stored] == [JobState.QUEUED]
    finally:
        await backend.close()


async def test_lock_held_past_lock_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend = await opened(path, busy_timeout=0.01, lock_timeout=0.3)
    other = hold_write_lock(path)
    try:
        with anyio.fail_after(BOUND), pytest.raises(BackendUnavailable, match="locked"):
            await backend.enqueue([r.job()])
        # reads never wait for writers in WAL mode
        assert await backend.list_jobs() == []
    finally:
        other.close()
        await backend.close()


async def test_cancelled_claim_hands_its_jobs_back(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend = await opened(path, busy_timeout=10.0)
    try:
        with anyio.fail_after(BOUND):
            [job] = await backend.enqueue([r.job()])
            other = hold_write_lock(path)
            async with anyio.create_task_group() as tg:
                tg.start_soon(claim_all, backend)
                # Long enough for the claim to be blocked inside SQLite on the lock.
                await anyio.sleep(0.3)
                tg.cancel_scope.cancel()
                other.execute("COMMIT")
                other.close()
            stored = await backend.get(job.id)
            assert stored is not None
            assert (stored.state, stored.attempts) == (JobState.QUEUED, 0)
            # claimed (started_at is set), then handed back rather than left active
            assert stored.started_at is not None
            assert len(await claim_all(backend)) == 1
    finally:
        await backend.close()


# -- several connections and processes -------------------------------------------


async def test_another_connection_wakes_wait_for_work_and_wait_finished(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    producer = await opened(path)
    worker = await opened(path, poll_interval=0.02)
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.wait_for_work, [QUEUE], 60.0)
                [job] = await producer.enqueue([r.job()])
            [lease] = await claim_all(worker)
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.settle, [completed(lease)])
                done = await producer.wait_finished(job.id)
            assert done is not None
            assert done.state is JobState.COMPLETED
    finally:
        await worker.close()
        await producer.close()


CLAIMER = """
import sys, anyio
from asyncq._records import JobState, Outcome
from asyncq.backends.sqlite import SQLiteBackend

async def main(path, queue, busy_timeout):
    backend = SQLiteBackend(path, busy_timeout=float(busy_timeout))
    await backend.open()
    claimed = []
    try:
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        while leases := await backend.claim([queue], 5, worker=str(id(claimed)), lease_for=60):
            claimed.extend(lease.job.id for lease in leases)
            done = [Outcome(x.job.id, x.token, JobState.COMPLETED) for x in leases]
            assert all(await backend.settle(done))
    finally:
        await backend.close()
    print(" ".join(claimed), flush=True)

anyio.run(main, *sys.argv[1:])
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "busy_timeout",
    [pytest.param(5.0, id="sqlite-waits"), pytest.param(0.0, id="backend-retries")],
)
async def test_two_processes_never_claim_the_same_job(tmp_path: Path, busy_timeout: float) -> None:
    path = tmp_path / "jobs.db"
    total = 2000
    backend = await opened(path)
    try:
        with anyio.fail_after(60):
            ids = {job.id for job in await backend.enqueue([r.job() for _ in range(total)])}
            root = str(Path(asyncq.__file__).parents[1])
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
            }
            command = [sys.executable, "-c", CLAIMER, str(path), QUEUE, str(busy_timeout)]
            outputs: list[list[str]] = []
            async with (
                await anyio.open_process(command, env=env, stderr=None) as first,
                await anyio.open_process(command, env=env, stderr=None) as second,
            ):
                processes = [first, second]
                readers = [BufferedByteReceiveStream(p.stdout) for p in processes]  # type: ignore[arg-type]
                for reader in readers:
                    assert await reader.receive_until(b"\n", 100) == b"ready"
                for process in processes:  # start both at once
                    assert process.stdin is not None
                    await process.stdin.send(b"go\n")

                async def collect(reader: BufferedByteReceiveStream) -> None:
                    line = await reader.receive_until(b"\n", 1 << 20)
                    outputs.append(line.decode().split())

                async with anyio.create_task_group() as tg:
                    for reader in readers:
                        tg.start_soon(collect, reader)
                assert [await p.wait() for p in processes] == [0, 0]

            claims = Counter(job_id for output in outputs for job_id in output)
            assert set(claims) == ids
            assert max(claims.values()) == 1, "a job was claimed twice"
            assert all(output for output in outputs), "one process claimed nothing"
            [stats] = await backend.stats([QUEUE])
            assert stats.counts[JobState.COMPLETED] == total
    finally:
        await backend.close()


# -- retention -------------------------------------------------------------------


class Clock:
    """A clock the test moves; it starts a little ahead so new jobs are ready at once."""

    def __init__(self) -> None:
        self.now = time.time() + 1.0

    def __call__(self) -> float:
        return self.now


async def test_prune_applies_retention_in_batches(tmp_path: Path) -> None:
    clock = Clock()
    backend = SQLiteBackend(
        tmp_path / "jobs.db", clock=clock, retention_completed=100.0, retention_dead=100.0
    )
    await backend.open()
    try:
        with anyio.fail_after(BOUND):
            kept = [r.job(result_ttl=None) for _ in range(3)]
            expiring = [r.job(result_ttl=10.0) for _ in range(1200)]
            await backend.enqueue([*kept, *expiring])
            leases = {lease.job.id: lease for lease in await claim_all(backend, 2000)}
            dead, cancelled, complete = (leases[job.id] for job in kept)
            await backend.settle(
                [
                    *(completed(leases[job.id]) for job in expiring),
                    Outcome(dead.job.id, dead.token, JobState.DEAD, error=r.error(dead)),
                    Outcome(cancelled.job.id, cancelled.token, JobState.CANCELLED),
                    completed(complete),
                ]
            )
            assert await backend.prune() == 0

            clock.now += 11  # past result_ttl, within retention
            assert await backend.prune() == 1200
            assert await backend.get(complete.job.id) is not None

            clock.now += 100  # past retention for completed and dead; cancelled keeps 14 days
            assert await backend.prune() == 2
            remaining = await backend.list_jobs()
            assert [job.id for job in remaining] == [cancelled.job.id]
    finally:
        await backend.close()


DAY = 86_400.0


async def finish_one_of_each(backend: SQLiteBackend, ttl: float | None = None) -> list[str]:
    """Complete (with ``ttl``), kill and cancel one job each; their ids."""
    jobs = [r.job(result_ttl=ttl), r.job(), r.job()]
    await backend.enqueue(jobs)
    leases = {lease.job.id: lease for lease in await claim_all(backend)}
    done, dead, cancelled = (leases[job.id] for job in jobs)
    await backend.settle(
        [
            completed(done),
            Outcome(dead.job.id, dead.token, JobState.DEAD, error=r.error(dead)),
            Outcome(cancelled.job.id, cancelled.token, JobState.CANCELLED),
        ]
    )
    return [job.id for job in jobs]


async def test_prune_keeps_finished_jobs_for_the_default_retention(tmp_path: Path) -> None:
    clock = Clock()
    backend = await opened(tmp_path / "jobs.db", clock=clock)
    try:
        with anyio.fail_after(BOUND):
            done, dead, cancelled = await finish_one_of_each(backend)
            clock.now += DAY - 1
            assert await backend.prune() == 0
            clock.now += 2  # the completed job is past its day
            assert await backend.prune() == 1
            assert await backend.get(done) is None
            clock.now += 13 * DAY - 2
            assert await backend.prune() == 0
            clock.now += 2  # dead and cancelled jobs are past their 14 days
            assert await backend.prune() == 2
            assert await backend.get(dead) is None
            assert await backend.get(cancelled) is None
    finally:
        await backend.close()


async def test_a_result_ttl_decides_for_its_job_and_none_keeps_for_ever(tmp_path: Path) -> None:
    clock = Clock()
    keep = Retention(completed=10.0, dead=None, cancelled=10.0)
    backend = await opened(tmp_path / "jobs.db", clock=clock, retention=keep)
    try:
        with anyio.fail_after(BOUND):
            done, dead, cancelled = await finish_one_of_each(backend, ttl=100.0)
            clock.now += 11  # past the completed retention, within the job's result_ttl
            assert await backend.prune() == 1
            assert await backend.get(done) is not None
            assert await backend.get(cancelled) is None
            clock.now += 100 * DAY
            assert await backend.prune() == 1
            assert [job.id for job in await backend.list_jobs()] == [dead]
    finally:
        await backend.close()


# -- indexes ---------------------------------------------------------------------


class Traced(SQLiteBackend):
    """Records every statement the backend runs, with its parameters inlined."""

    statements: list[str]

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        self.statements = []
        conn.set_trace_callback(self.statements.append)
        return conn


def table_scans(path: Path, statements: list[str]) -> list[str]:
    """The statements on the jobs table whose plan reads it other than by an index search."""
    conn = sqlite3.connect(path)
    bad = []
    try:
        for statement in statements:
            words = statement.split(None, 1)
            if "asyncq_jobs" not in statement or words[0].upper() not in {
                "SELECT",
                "UPDATE",
                "DELETE",
            }:
                continue
            for *_, detail in conn.execute(f"EXPLAIN QUERY PLAN {statement}"):
                if "asyncq_jobs" in detail and not detail.startswith("SEARCH"):
                    bad.append(f"{detail}: {statement}")
    finally:
        conn.close()
    return bad


async def test_hot_paths_use_indexes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend = Traced(path)
    await backend.open()
    try:
        with anyio.fail_after(BOUND):
            await backend.enqueue([r.job(key=f"k{i}", priority=i % 3) for i in range(20)])
            await backend.enqueue([r.job(delay=-1.0), r.job(delay=60), r.job(key="k1")])
            await backend.wait_for_work([QUEUE], 0)
            leases = await claim_all(backend, 5)
            await backend.heartbeat(leases, lease_for=60)
            await backend.progress(leases[0], 0.5)
            await backend.settle([completed(lease) for lease in leases])
            await backend.recover()
            await backend.prune()
            await backend.stats([QUEUE])
            await backend.stats()
            await backend.get(leases[0].job.id)
            await backend.cancel(leases[1].job.id)
            await backend.purge(states=[JobState.COMPLETED], older_than=time.time() + 1)
            await backend.retry_dead([leases[2].job.id])
            await backend.set_paused(QUEUE, True)
        assert table_scans(path, backend.statements) == []
    finally:
        await backend.close()
