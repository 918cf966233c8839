"""What only the PostgreSQL backend promises, against the real server.

The conformance suite covers the protocol; this module covers migrations,
transactional enqueue, the claim's plan, many claimers at once, lost
connections, prune's advisory lock, error mapping and round trips per batch.
Every backend here works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import asyncpg
import pytest
from msgspec.structs import replace

from asyncq._records import JobRecord, JobState, Lease, Outcome
from asyncq.backends import from_url
from asyncq.backends.base import Retention
from asyncq.backends.postgres import PostgresBackend, mask_dsn
from asyncq.backends.postgres import admin as pg_admin
from asyncq.backends.postgres.enqueue import COPY_MIN_BATCH
from asyncq.backends.postgres.schema import MIGRATIONS, lock_key
from asyncq.backends.postgres.sql import Statements
from asyncq.exceptions import BackendError, BackendUnavailable, ConfigurationError
from conftest import unique_namespace

from . import _records as r

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

BOUND = 20.0
#: Longer than any test waits, so only a notification can end a wait in time.
NO_POLL = 120.0

Make = Callable[..., PostgresBackend]
_T = TypeVar("_T")


async def claim_all(backend: PostgresBackend, limit: int = 100) -> list[Lease]:
    return await backend.claim([r.QUEUE], limit, worker="w1", lease_for=60)


# -- URLs -------------------------------------------------------------------------


def test_from_url_reads_the_schema_and_masks_the_password() -> None:
    backend = PostgresBackend.from_url("postgres://app:s3cret@db.example:5433/jobs?schema=shop")
    assert backend.schema == "shop"
    assert "s3cret" not in backend.url
    assert backend.url == "postgres://app:***@db.example:5433/jobs?schema=shop"
    assert PostgresBackend.from_url("postgresql://h/db?schema=a", schema="b").schema == "b"
    assert PostgresBackend.from_url("postgresql://h/db").schema == "asyncq"
    assert isinstance(from_url("postgresql://h/db?schema=x"), PostgresBackend)


def test_mask_dsn_hides_a_password_in_the_query() -> None:
    masked = mask_dsn("postgresql://h/db?user=u&password=s3cret&sslmode=require")
    assert "s3cret" not in masked
    assert "password=***" in masked
    assert "sslmode=require" in masked


@pytest.mark.parametrize("schema", ["Upper", "1abc", "a-b", "x" * 49, 'a"; drop'])
def test_bad_schema_names_are_refused(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="schema name"):
        PostgresBackend("postgresql://h/db", schema=schema)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not a PostgreSQL URL"):
        PostgresBackend.from_url("mysql://u:pw@h/db")


# -- migrations -------------------------------------------------------------------


async def test_migrate_applies_once(make_postgres: Make) -> None:
    backend = make_postgres()
    with anyio.fail_after(BOUND):
        assert await backend.migrate() == list(range(1, len(MIGRATIONS) + 1))
        assert await backend.migrate() == []
        await backend.open()
        assert await backend.migrate() == []
        assert await backend.get("nothing") is None


async def test_concurrent_migrations_apply_each_step_once(make_postgres: Make) -> None:
    schema = unique_namespace()
    backends = [make_postgres(schema) for _ in range(4)]
    results: list[list[int]] = []

    async def migrate(backend: PostgresBackend) -> None:
        results.append(await backend.migrate())

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for backend in backends:
                tg.start_soon(migrate, backend)
    assert sorted(results) == [[], [], [], list(range(1, len(MIGRATIONS) + 1))]


async def test_a_schema_at_the_first_version_is_upgraded(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    # A schema made by the first release, with jobs in it, then migrated.
    schema = unique_namespace()
    statements = Statements(schema)
    with anyio.fail_after(BOUND):
        async with postgres_admin.transaction():
            await postgres_admin.execute(statements.bootstrap)
            description, step = statements.migrations[0]
            await postgres_admin.execute(step)
            await postgres_admin.execute(statements.record_version, 1, description)
        first = make_postgres(schema)
        with pytest.raises(ConfigurationError, match="out of date"):
            await first.open()
        assert await first.migrate() == list(range(2, len(MIGRATIONS) + 1))
        backend = make_postgres(schema)
        await backend.open()
        await backend.enqueue([r.job(), r.job(), r.job(delay=60)])
        [lease] = await claim_all(backend, 1)
        await backend.settle([r.completed(lease)])
        [stats] = await backend.stats([r.QUEUE])
    assert stats.counts[JobState.QUEUED] == 1
    assert stats.counts[JobState.SCHEDULED] == 1
    assert stats.counts[JobState.COMPLETED] == 1


async def test_open_refuses_an_unmigrated_schema(make_postgres: Make) -> None:
    backend = make_postgres()
    with anyio.fail_after(BOUND), pytest.raises(ConfigurationError) as caught:
        await backend.open()
    assert "asyncq migrate" in str(caught.value)
    assert "migrate=True" in str(caught.value)
    assert backend.schema in str(caught.value)


async def test_open_with_migrate_creates_the_schema(make_postgres: Make) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        [stored] = await backend.enqueue([r.job()])
    assert stored.state is JobState.QUEUED


async def test_a_schema_newer_than_the_code_is_refused(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    schema = unique_namespace()
    with anyio.fail_after(BOUND):
        await make_postgres(schema).migrate()
        await postgres_admin.execute(
            f"INSERT INTO {schema}.migrations (version, description) VALUES (99, 'future')"
        )
        with pytest.raises(ConfigurationError, match="newer than this asyncq"):
            await make_postgres(schema).open()
        with pytest.raises(ConfigurationError, match="newer than this asyncq"):
            await make_postgres(schema, migrate=True).open()


async def test_a_schema_missing_a_step_is_out_of_date(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    schema = unique_namespace()
    with anyio.fail_after(BOUND):
        await make_postgres(schema).migrate()
        await postgres_admin.execute(f"DELETE FROM {schema}.migrations")
        with pytest.raises(ConfigurationError, match="asyncq migrate"):
            await make_postgres(schema).open()


# -- transactional enqueue ----------------------------------------------------------


async def test_enqueue_in_a_committed_transaction(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True, poll_interval=NO_POLL)
    record = r.job(key="order-1")
    woke = anyio.Event()

    async def wait() -> None:
        await backend.wait_for_work([r.QUEUE], NO_POLL)
        woke.set()

    with anyio.fail_after(BOUND):
        await backend.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            async with postgres_admin.transaction():
                [stored] = await backend.enqueue([record], connection=postgres_admin)
                assert stored.id == record.id
                assert stored.state is JobState.QUEUED
                # Invisible to everyone else, and nobody woken, until the commit.
                assert await backend.get(record.id) is None
                assert not woke.is_set()
            await woke.wait()
        found = await backend.get(record.id)
    assert found is not None
    assert found.state is JobState.QUEUED


async def test_enqueue_in_a_rolled_back_transaction(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True)
    record = r.job(key="order-1")

    class Abort(Exception):
        pass

    with anyio.fail_after(BOUND):
        await backend.open()
        try:
            async with postgres_admin.transaction():
                await backend.enqueue([record], connection=postgres_admin)
                raise Abort
        except Abort:
            pass
        assert await backend.get(record.id) is None
        # The rolled-back job never held its key.
        again = r.job(key="order-1")
        [stored] = await backend.enqueue([again])
    assert stored.id == again.id


async def test_enqueue_without_a_transaction_commits_at_once(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        [stored] = await backend.enqueue([r.job()], connection=postgres_admin)
        assert await backend.get(stored.id) is not None


async def test_enqueue_meets_a_key_taken_in_an_open_transaction(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    # The second insert waits for the first transaction, then finds its job
    # through a fresh read: its own snapshot predates the commit.
    backend = make_postgres(migrate=True)
    first, second = r.job(key="order-7"), r.job(key="order-7")
    result: list[JobRecord] = []

    async def enqueue_second() -> None:
        result.extend(await backend.enqueue([second]))

    with anyio.fail_after(BOUND):
        await backend.open()
        async with anyio.create_task_group() as tg, postgres_admin.transaction():
            await backend.enqueue([first], connection=postgres_admin)
            tg.start_soon(enqueue_second)
            # The server offers no event for "a statement now waits on a lock";
            # ask it until the second insert is blocked behind this transaction.
            blocked = (
                "SELECT count(*) FROM pg_locks"
                " WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))"
            )
            pid = postgres_admin.get_server_pid()
            while not await postgres_admin.fetchval(blocked, pid):  # noqa: ASYNC110
                await anyio.sleep(0.01)
    [stored] = result
    assert stored.id == first.id


async def test_enqueue_on_something_else_is_refused(make_postgres: Make) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        with pytest.raises(ConfigurationError, match="asyncpg connection"):
            await backend.enqueue([r.job()], connection=object())


# -- the claim ------------------------------------------------------------------------


async def test_claim_reads_the_partial_ready_index(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        await backend.enqueue([r.job(priority=i % 3) for i in range(50)])
        await backend.enqueue([r.job(delay=60) for _ in range(10)])
        statements = Statements(backend.schema)
        async with postgres_admin.transaction():
            # A table this small is cheaper to scan whole; forbid that so the
            # plan shows the access path the claim gets on a real backlog.
            await postgres_admin.execute("SET LOCAL enable_seqscan = off")
            rows = await postgres_admin.fetch(
                "EXPLAIN " + statements.claim, [r.QUEUE, "other"], 10, "w1", 60.0
            )
    plan = [row[0].strip() for row in rows]
    text = "\n".join(plan)
    assert "Index Scan using jobs_ready" in text, text
    # Rows come off the index already in claim order: nothing sorts them before
    # they are locked, and the due-time bound is part of the index condition.
    lock = next(i for i, line in enumerate(plan) if "LockRows" in line)
    assert "Index Scan using jobs_ready" in plan[lock + 1], text
    cond = next(line for line in plan[lock + 1 :] if line.startswith("Index Cond"))
    assert "scheduled_at <=" in cond, text


async def test_wait_for_work_wakes_for_the_earliest_job_of_any_priority(
    make_postgres: Make,
) -> None:
    # The ready index is ordered by priority first: the earliest due job may
    # sit behind later ones of a higher priority.
    backend = make_postgres(migrate=True, poll_interval=NO_POLL)
    with anyio.fail_after(BOUND):
        await backend.open()
        jobs = [r.job(priority=p, delay=NO_POLL) for p in (9, -1)]
        await backend.enqueue([*jobs, r.job(priority=5, delay=0.3)])
        started = time.monotonic()
        await backend.wait_for_work([r.QUEUE], NO_POLL)
        waited = time.monotonic() - started
        [lease] = await claim_all(backend)
    assert 0.1 < waited < 5
    assert lease.job.priority == 5


async def test_many_claimers_never_share_a_job(make_postgres: Make) -> None:
    total, claimers, batch = 3_000, 8, 50
    schema = unique_namespace()
    backends = [make_postgres(schema, migrate=True, max_size=2) for _ in range(claimers)]
    claimed: list[list[str]] = [[] for _ in range(claimers)]

    async def drain(index: int) -> None:
        while leases := await backends[index].claim(
            [r.QUEUE], batch, worker=f"w{index}", lease_for=60
        ):
            claimed[index].extend(lease.job.id for lease in leases)

    with anyio.fail_after(60):
        for backend in backends:
            await backend.open()
        for _ in range(total // 1_000):
            await backends[0].enqueue([r.job() for _ in range(1_000)])
        async with anyio.create_task_group() as tg:
            for index in range(claimers):
                tg.start_soon(drain, index)
        [stats] = await backends[0].stats([r.QUEUE])
    ids = [job_id for ids in claimed for job_id in ids]
    assert len(ids) == total
    assert len(set(ids)) == total
    assert stats.counts[JobState.ACTIVE] == total
    assert sum(1 for ids in claimed if ids) > 1, "one claimer took everything"


# -- lost connections -------------------------------------------------------------------


async def test_terminated_connections_are_replaced(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    name = f"asyncq-{uuid.uuid4().hex[:8]}"
    backend = make_postgres(
        migrate=True, poll_interval=NO_POLL, server_settings={"application_name": name}
    )
    producer = make_postgres(backend.schema)
    kill = (
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1"
    )
    with anyio.fail_after(BOUND):
        await backend.open()
        await producer.open()
        [record] = await backend.enqueue([r.job()])
        await backend.wait_for_work([r.QUEUE], 0.01)  # the listener is up
        result: list[Any] = []

        async def wait() -> None:
            result.append(await backend.wait_finished(record.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            # The pool's connection and the listening one.
            assert await postgres_admin.fetchval(kill, name) >= 2
            [lease] = await claim_all(backend)
            assert await backend.settle([r.completed(lease)]) == [True]
        [done] = result
        assert done.state is JobState.COMPLETED

        # Once more, with the backend waiting for work: it listens again. A
        # wait may end early (the lost listener wakes it); it then finds nothing
        # to claim and waits again, and only a notification ends that wait.
        assert await postgres_admin.fetchval(kill, name) >= 2

        async def enqueue_later() -> None:
            await anyio.wait_all_tasks_blocked()
            await producer.enqueue([r.job()])

        async with anyio.create_task_group() as tg:
            tg.start_soon(enqueue_later)
            while not (leases := await claim_all(backend)):
                await backend.wait_for_work([r.QUEUE], NO_POLL)
        assert len(leases) == 1


async def test_unreachable_server_is_backend_unavailable(make_postgres: Make) -> None:
    backend = PostgresBackend.from_url(
        "postgresql://postgres:s3cret@127.0.0.1:1/test", schema=unique_namespace()
    )
    with anyio.fail_after(BOUND):
        for attempt in (backend.open, lambda: backend.get("x"), backend.migrate):
            with pytest.raises(BackendUnavailable) as caught:
                await attempt()
            assert "s3cret" not in str(caught.value)
            assert "postgres:***@127.0.0.1:1" in str(caught.value)
            assert not isinstance(caught.value, asyncpg.PostgresError)


async def test_other_server_errors_are_backend_error(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        await postgres_admin.execute(f"DROP TABLE {backend.schema}.jobs CASCADE")
        with pytest.raises(BackendError) as caught:
            await backend.get("x")
    assert not isinstance(caught.value, BackendUnavailable)
    assert isinstance(caught.value.__cause__, asyncpg.UndefinedTableError)


async def test_closed_backend_is_unavailable(make_postgres: Make) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        await backend.close()
        with pytest.raises(BackendUnavailable, match="closed"):
            await backend.get("x")


# -- prune --------------------------------------------------------------------------


async def finish_all(backend: PostgresBackend, n: int, **job: Any) -> None:
    for start in range(0, n, 1_000):
        await backend.enqueue([r.job(**job) for _ in range(min(1_000, n - start))])
    while leases := await claim_all(backend, 1_000):
        assert all(await backend.settle([r.completed(lease) for lease in leases]))


async def test_prune_runs_under_an_advisory_lock(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    total = 2_500
    schema = unique_namespace()
    first, second = make_postgres(schema, migrate=True), make_postgres(schema)
    with anyio.fail_after(BOUND):
        await first.open()
        await second.open()
        await finish_all(first, total, result_ttl=0.0)
        key = lock_key("prune", schema)
        await postgres_admin.execute("SELECT pg_advisory_lock($1)", key)
        try:
            # Someone else is pruning: both return at once, deleting nothing.
            assert await first.prune() == 0
            assert await second.prune() == 0
        finally:
            await postgres_admin.execute("SELECT pg_advisory_unlock($1)", key)
        [before] = await first.stats([r.QUEUE])
        assert before.counts[JobState.COMPLETED] == total
        pruned: list[int] = []

        async def prune(backend: PostgresBackend) -> None:
            pruned.append(await backend.prune())

        async with anyio.create_task_group() as tg:
            tg.start_soon(prune, first)
            tg.start_soon(prune, second)
        assert sum(pruned) == total
        [after] = await first.stats([r.QUEUE])
        assert after.counts[JobState.COMPLETED] == 0
        assert await first.prune() == 0


async def test_prune_applies_retention(make_postgres: Make) -> None:
    schema = unique_namespace()
    keeper = make_postgres(schema, migrate=True, retention_completed=None, retention_dead=None)
    pruner = make_postgres(
        schema, retention_completed=0.0, retention_dead=0.0, retention_cancelled=0.0
    )
    with anyio.fail_after(BOUND):
        await keeper.open()
        await pruner.open()
        await finish_all(keeper, 3)  # completed, no result TTL
        await finish_all(keeper, 2, result_ttl=3600.0)  # completed, kept an hour
        await keeper.enqueue([r.job(), r.job()])
        leases = await claim_all(keeper)
        await keeper.settle([r.dead(leases[0]), r.cancelled(leases[1])])
        assert await keeper.prune() == 0
        assert await pruner.prune() == 5
        [stats] = await pruner.stats([r.QUEUE])
    assert stats.counts[JobState.COMPLETED] == 2
    assert stats.counts[JobState.DEAD] == stats.counts[JobState.CANCELLED] == 0


async def finish_as(backend: PostgresBackend, n: int, settle: Callable[[Lease], Outcome]) -> None:
    await backend.enqueue([r.job() for _ in range(n)])
    leases = await claim_all(backend, n)
    assert all(await backend.settle([settle(lease) for lease in leases]))


async def test_prune_keeps_each_finished_state_for_its_own_retention(make_postgres: Make) -> None:
    schema = unique_namespace()
    keeper = make_postgres(schema, migrate=True, retention=Retention(None, None, None))
    with anyio.fail_after(BOUND):
        await keeper.open()
        await finish_as(keeper, 2, r.completed)
        await finish_as(keeper, 3, r.dead)
        await finish_as(keeper, 4, r.cancelled)
        assert await keeper.prune() == 0
        # Only cancelled jobs are old enough for this one: dead ones stay
        # (retention_dead no longer speaks for cancelled jobs).
        only_cancelled = make_postgres(schema, retention_completed=None, retention_cancelled=0.0)
        assert only_cancelled.retention == Retention(completed=None, cancelled=0.0)
        assert await only_cancelled.prune() == 4
        [stats] = await keeper.stats([r.QUEUE])
        assert (stats.counts[JobState.DEAD], stats.counts[JobState.CANCELLED]) == (3, 0)
        assert stats.counts[JobState.COMPLETED] == 2
        # A setting by name, over a Retention given whole.
        only_dead = make_postgres(schema, retention=Retention(completed=None), retention_dead=0.0)
        assert await only_dead.prune() == 3
        [stats] = await keeper.stats([r.QUEUE])
    assert stats.counts[JobState.COMPLETED] == 2


async def test_prune_deletes_a_state_in_bounded_batches(
    make_postgres: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_admin, "PRUNE_BATCH", 3)
    backend = make_postgres(
        migrate=True, retention=Retention(completed=None, dead=None, cancelled=0.0)
    )
    with anyio.fail_after(BOUND):
        await backend.open()
        await finish_as(backend, 8, r.cancelled)
        await finish_as(backend, 2, r.dead)
        assert await backend.prune() == 8  # batches of 3, 3 and 2
        [stats] = await backend.stats([r.QUEUE])
    assert (stats.counts[JobState.CANCELLED], stats.counts[JobState.DEAD]) == (0, 2)


async def test_enqueue_frees_an_expired_key_holder(make_postgres: Make) -> None:
    backend = make_postgres(migrate=True)
    with anyio.fail_after(BOUND):
        await backend.open()
        await finish_all(backend, 1, key="k", result_ttl=0.0)
        fresh = r.job(key="k")
        [stored] = await backend.enqueue([fresh])
        assert stored.id == fresh.id
        [stats] = await backend.stats([r.QUEUE])
    assert stats.counts[JobState.COMPLETED] == 0  # the expired holder went in the same statement


# -- batches copied in -------------------------------------------------------------

BIG = COPY_MIN_BATCH * 2


async def test_a_large_batch_is_copied_in_and_wakes_a_worker(make_postgres: Make) -> None:
    backend = make_postgres(migrate=True, poll_interval=NO_POLL)
    jobs = [r.job(priority=i % 3, headers={"n": str(i)} if i % 2 else None) for i in range(BIG)]
    woke = anyio.Event()

    async def wait() -> None:
        await backend.wait_for_work([r.QUEUE], NO_POLL)
        woke.set()

    with anyio.fail_after(BOUND):
        await backend.open()
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            stored = await backend.enqueue(jobs)
            await woke.wait()
        assert stored == jobs  # all queued, as submitted
        assert await backend.get(jobs[1].id) == jobs[1]
        leases = await claim_all(backend, BIG)
        [stats] = await backend.stats([r.QUEUE])
    assert len(leases) == BIG
    assert stats.counts[JobState.ACTIVE] == BIG
    first = [lease.job.id for lease in leases[: BIG // 3]]
    assert first == [job.id for job in jobs if job.priority == 2][: BIG // 3]


async def test_a_copied_batch_from_a_clock_ahead_is_ready_at_once(make_postgres: Make) -> None:
    backend = make_postgres(migrate=True)
    ahead = time.time() + 30
    jobs = [replace(r.job(), enqueued_at=ahead, scheduled_at=ahead) for _ in range(BIG)]
    with anyio.fail_after(BOUND):
        await backend.open()
        stored = await backend.enqueue(jobs)
        assert {s.state for s in stored} == {JobState.QUEUED}
        leases = await claim_all(backend, BIG)
    assert len(leases) == BIG
    assert max(lease.job.scheduled_at for lease in leases) <= time.time() + 1


async def test_a_copied_batch_sent_again_returns_the_stored_jobs(make_postgres: Make) -> None:
    # What the retry after a lost reply does: every id is stored already.
    backend = make_postgres(migrate=True)
    jobs = [r.job() for _ in range(BIG)]
    with anyio.fail_after(BOUND):
        await backend.open()
        first = await backend.enqueue(jobs)
        second = await backend.enqueue(jobs)
        [stats] = await backend.stats([r.QUEUE])
    assert [s.id for s in first] == [s.id for s in second] == [j.id for j in jobs]
    assert stats.counts[JobState.QUEUED] == BIG


@pytest.mark.parametrize("size", [2, BIG])
async def test_a_batch_in_the_callers_transaction_is_all_or_nothing(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any], size: int
) -> None:
    backend = make_postgres(migrate=True)

    class Abort(Exception):
        pass

    with anyio.fail_after(BOUND):
        await backend.open()
        dropped = [r.job() for _ in range(size)]
        try:
            async with postgres_admin.transaction():
                await backend.enqueue(dropped, connection=postgres_admin)
                raise Abort
        except Abort:
            pass
        kept = [r.job() for _ in range(size)]
        async with postgres_admin.transaction():
            await backend.enqueue(kept, connection=postgres_admin)
            assert await backend.get(kept[-1].id) is None
        assert await backend.get(dropped[-1].id) is None
        assert await backend.get(kept[-1].id) is not None
        assert len(await claim_all(backend, 2 * size)) == size


# -- round trips and notifications ----------------------------------------------------


async def test_one_statement_per_batch(postgres_dsn: str) -> None:
    statements: list[str] = []

    def log(query: Any) -> None:
        statements.append(query.query)

    async def init(conn: asyncpg.Connection[Any]) -> None:
        conn.add_query_logger(log)

    async def no_reset(conn: asyncpg.Connection[Any]) -> None:
        pass

    async def counted(action: Awaitable[_T]) -> tuple[_T, int]:
        """What ``action`` returned, and how many statements it sent."""
        await anyio.lowlevel.checkpoint()  # loggers run on the loop's next pass
        statements.clear()
        result = await action
        await anyio.lowlevel.checkpoint()
        return result, len(statements)

    async with asyncpg.create_pool(
        postgres_dsn, min_size=1, max_size=2, init=init, reset=no_reset
    ) as pool:
        backend = PostgresBackend(pool, schema=unique_namespace(), migrate=True)
        try:
            with anyio.fail_after(BOUND):
                await backend.open()
                assert "(asyncpg pool)" not in backend.url
                for round in range(2):  # the first prepares statements and learns types
                    jobs = [r.job(key=f"{round}-{i}") for i in range(100)]
                    _, enqueued = await counted(backend.enqueue(jobs))
                    leases, claimed = await counted(claim_all(backend))
                    _, beat = await counted(backend.heartbeat(leases, lease_for=60))
                    outcomes = [r.completed(lease) for lease in leases]
                    applied, settled = await counted(backend.settle(outcomes))
                    assert all(applied)
                assert (enqueued, claimed, beat, settled) == (1, 1, 1, 1)
                assert len(leases) == 100
                # The listener holds a connection of the caller's pool.
                assert (await backend.wait_finished(leases[0].job.id)) is not None
        finally:
            await backend.close()
            await backend.drop()


async def test_one_settle_wakes_hundreds_of_waiters(make_postgres: Make) -> None:
    # 400 ids do not fit one notification payload: the batch is split.
    backend = make_postgres(migrate=True, poll_interval=NO_POLL)
    done: list[str] = []

    async def wait(job_id: str) -> None:
        finished = await backend.wait_finished(job_id)
        assert finished is not None
        done.append(finished.id)

    with anyio.fail_after(BOUND):
        await backend.open()
        await backend.enqueue([r.job() for _ in range(400)])
        leases = await claim_all(backend, 400)
        async with anyio.create_task_group() as tg:
            for lease in leases:
                tg.start_soon(wait, lease.job.id)
            await anyio.wait_all_tasks_blocked()
            assert all(await backend.settle([r.completed(lease) for lease in leases]))
    assert sorted(done) == sorted(lease.job.id for lease in leases)


async def test_foreign_notifications_on_the_channels_are_ignored(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True, poll_interval=NO_POLL)
    with anyio.fail_after(BOUND):
        await backend.open()
        [record] = await backend.enqueue([r.job()])
        [lease] = await claim_all(backend)
        result: list[Any] = []

        async def wait() -> None:
            result.append(await backend.wait_finished(record.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            for suffix, payload in (("done", "not json"), ("done", '{"a": 1}'), ("work", "x")):
                channel = f"{backend.schema}:{suffix}"
                await postgres_admin.execute("SELECT pg_notify($1, $2)", channel, payload)
            assert await backend.settle([r.completed(lease)]) == [True]
    [done] = result
    assert done.state is JobState.COMPLETED


async def test_the_safety_net_finds_a_change_nobody_announced(
    make_postgres: Make, postgres_admin: asyncpg.Connection[Any]
) -> None:
    backend = make_postgres(migrate=True, poll_interval=0.2)
    with anyio.fail_after(BOUND):
        await backend.open()
        [record] = await backend.enqueue([r.job()])
        await claim_all(backend)
        result: list[Any] = []

        async def wait() -> None:
            result.append(await backend.wait_finished(record.id))

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            # An operator's hand edit sends no notification.
            await postgres_admin.execute(
                f"UPDATE {backend.schema}.jobs SET state = 'cancelled', finished_at = 1"
                " WHERE id = $1",
                record.id,
            )
    [done] = result
    assert done.state is JobState.CANCELLED
