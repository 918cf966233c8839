"""Poison isolation on Redis: one job hash holding garbage costs only its own job.

Each test corrupts one field of one job's hash with ``HSET`` (the fields are
listed in ``asyncq.backends.redis.scripts``) and checks that the healthy jobs
beside it run, that the bad one ends completed (the garbage was harmless) or
dead with an ``undecodable`` error, and that counts and indexes agree. Run on
the real server and on fakeredis (whose Lua runs the same scripts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import JobState
from asyncq._records import ErrorKind, JobRecord, Outcome
from asyncq.backends._poison import UNREADABLE_NAME
from asyncq.backends.redis import RedisBackend
from asyncq.testing import run_until_idle
from ops_app import Note, app, asyncq, note
from ops_app import lent as ops_lent

pytestmark = pytest.mark.anyio

BOUND = 20.0
QUEUE = "default"
HEALTHY = 12
#: every field a job hash may hold (see the docstring of ``scripts``)
FIELDS = (
    "d", "st", "p", "n", "m", "k", "t", "att", "sa", "sta",
    "fin", "lx", "w", "tok", "c", "pr", "r", "e", "wt",
    "pd", "mt", "lg", "lc", "ld", "lim", "hb", "rp",
)  # fmt: skip
GARBAGE = {
    "bytes": b"\xff\xfe\x00\x81{not: [json, msgpack or a number",
    "nan": b"nan",
    "huge": b"9" * 100_000,
}


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def redis(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The backend, lent to ``ops_app``'s app (so the CLI runs on it)."""
    async with ops_lent(backend, monkeypatch):
        yield backend


def key(backend: RedisBackend, job_id: str, queue: str = QUEUE) -> str:
    return backend._prefix(queue) + "j:" + job_id


async def corrupt(backend: RedisBackend, job_id: str, field: str, value: bytes) -> None:
    await backend._client.hset(key(backend, job_id), field, value)


async def enqueue_batch() -> tuple[list[str], str]:
    """Twelve healthy jobs and a victim enqueued in the middle of them."""
    first = [await note.enqueue(Note(f"ok {i}")) for i in range(HEALTHY // 2)]
    victim = await note.enqueue(Note("victim"))
    rest = [await note.enqueue(Note(f"ok {i}")) for i in range(HEALTHY // 2, HEALTHY)]
    return sorted(h.id for h in (*first, *rest)), victim.id


async def check_consistent(backend: RedisBackend) -> None:
    """Counts, indexes and listings agree: no job is counted where it cannot be found."""
    (stats,) = await backend.stats([QUEUE])
    assert sum(stats.counts.values()) == HEALTHY + 1
    for state in JobState:
        listed = await backend.list_jobs(state=state, queue=QUEUE, limit=1000)
        assert len(listed) == stats.counts[state], state
    assert len(await backend.list_jobs(queue=QUEUE, limit=1000)) == HEALTHY + 1


def assert_set_aside(job: JobRecord | None) -> None:
    assert job is not None
    assert job.state is JobState.DEAD
    assert job.last_error is not None
    assert job.last_error.kind is ErrorKind.UNDECODABLE
    assert job.finished_at is not None


async def answers_on_the_cli(victim: str) -> None:
    for args in (
        ("jobs", "ops_app:app"),
        ("job", "ops_app:app", victim),
        ("status", "ops_app:app"),
    ):
        for extra in ((), ("--json",)):
            result = await asyncq(*args, *extra)
            assert result.exit_code == 0, (args, extra, result.output)
            assert not [line for line in result.output.splitlines() if line.startswith("Error:")]


# -- the fuzzer --------------------------------------------------------------------------


@pytest.mark.parametrize("due", [False, True], ids=["ready", "delayed"])
@pytest.mark.parametrize("garbage", list(GARBAGE))
@pytest.mark.parametrize("field", FIELDS)
async def test_one_garbage_field_costs_only_its_own_job(
    redis: RedisBackend, field: str, garbage: str, due: bool
) -> None:
    healthy, victim = await enqueue_batch()
    if due:
        # Delayed and due: ``promote`` reads it before the claim does.
        async with redis._client.pipeline(transaction=True) as pipe:
            prefix = redis._prefix(QUEUE)
            pipe.zrem(prefix + "r:0", victim)
            pipe.zadd(prefix + "delayed", {victim: 0})
            pipe.hset(key(redis, victim), "st", "scheduled")
            pipe.hincrby(prefix + "n", "queued", -1)
            pipe.hincrby(prefix + "n", "scheduled", 1)
            await pipe.execute()
    await corrupt(redis, victim, field, GARBAGE[garbage])

    with anyio.fail_after(BOUND):
        await run_until_idle(app, timeout=BOUND)
        for job_id in healthy:
            job = await redis.get(job_id)
            assert job is not None
            assert job.state is JobState.COMPLETED, job
        job = await redis.get(victim)
        assert job is not None
        if job.state is not JobState.COMPLETED:
            assert_set_aside(job)
        await check_consistent(redis)
        await answers_on_the_cli(victim)


# -- the defects of issue #20 ------------------------------------------------------------


async def test_non_numeric_attempts_no_longer_strand_the_claimed_batch(
    redis: RedisBackend,
) -> None:
    healthy, victim = await enqueue_batch()
    await corrupt(redis, victim, "att", b"three")
    with anyio.fail_after(BOUND):
        leases = await redis.claim([QUEUE], 20, worker="w", lease_for=30)
        assert sorted(lease.job.id for lease in leases) == healthy
        assert_set_aside(await redis.get(victim))
        (stats,) = await redis.stats([QUEUE])
        assert stats.counts[JobState.ACTIVE] == HEALTHY
        assert stats.counts[JobState.DEAD] == 1
        assert stats.counts[JobState.QUEUED] == 0
        await check_consistent(redis)


async def test_an_unknown_state_no_longer_makes_a_job_vanish(redis: RedisBackend) -> None:
    healthy, victim = await enqueue_batch()
    await corrupt(redis, victim, "st", b"bogus")
    with anyio.fail_after(BOUND):
        leases = await redis.claim([QUEUE], 20, worker="w", lease_for=30)
        assert sorted(lease.job.id for lease in leases) == healthy
        job = await redis.get(victim)
        assert_set_aside(job)
        assert job is not None
        assert job.name == "note"
        assert [j.id for j in await redis.list_jobs(state=JobState.DEAD)] == [victim]
        await check_consistent(redis)


@pytest.mark.parametrize(
    "fields",
    [None, {}, {"key": 7}, {"headers": [1]}, {"payload": "text"}, {"state": "bogus"}],
    ids=["garbage", "valid", "int-key", "list-headers", "text-payload", "bogus-state"],
)
async def test_a_record_that_does_not_decode_no_longer_crashes_the_worker(
    redis: RedisBackend, fields: dict[str, Any] | None
) -> None:
    healthy, victim = await enqueue_batch()
    base = {"id": victim, "name": "note", "queue": QUEUE, "payload": b"\x90"}
    record = b"\xc1 not msgpack" if fields is None else msgspec.msgpack.encode(base | fields)
    await corrupt(redis, victim, "d", record)
    with anyio.fail_after(BOUND):
        leases = await redis.claim([QUEUE], 20, worker="w", lease_for=30)
        ids = sorted(lease.job.id for lease in leases)
        if ids == sorted([*healthy, victim]):
            return  # it decodes: a record like any other
        assert ids == healthy
        job = await redis.get(victim)
        assert_set_aside(job)
        assert job is not None
        assert job.name == UNREADABLE_NAME
        assert job.queue == QUEUE
        assert job.last_error is not None
        assert job.last_error.type == "UnreadableRecord"
        assert record.hex() in (job.last_error.traceback or "")
        await check_consistent(redis)
        # Listed as corrupt, and shown by the CLI as such.
        (shown,) = [j for j in await redis.list_jobs(queue=QUEUE) if j.id == victim]
        assert shown.name == UNREADABLE_NAME
        result = await asyncq("job", "ops_app:app", victim)
        assert result.exit_code == 0, result.output
        assert UNREADABLE_NAME in result.output


async def test_settle_and_claim_takes_a_bad_record_aside_too(redis: RedisBackend) -> None:
    healthy, victim = await enqueue_batch()
    await corrupt(redis, victim, "e", b"{not json")
    with anyio.fail_after(BOUND):
        first = await redis.claim([QUEUE], 1, worker="w", lease_for=30)
        outcome = Outcome(job_id=first[0].job.id, token=first[0].token, state=JobState.COMPLETED)
        applied, leases = await redis.settle_and_claim(
            [outcome], [QUEUE], 20, worker="w", lease_for=30
        )
        assert applied == [True]
        assert sorted(lease.job.id for lease in leases) == healthy[1:]
        job = await redis.get(victim)
        assert_set_aside(job)
        # The stored errors did not read: the one error replaces them.
        assert job is not None
        assert [e.kind for e in job.errors] == [ErrorKind.UNDECODABLE]
        await check_consistent(redis)


async def test_a_waiter_of_a_job_taken_aside_is_woken(redis: RedisBackend) -> None:
    _, victim = await enqueue_batch()
    await corrupt(redis, victim, "d", b"\xc1")
    found: list[JobRecord | None] = []

    async def wait() -> None:
        found.append(await redis.wait_finished(victim))

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await redis.claim([QUEUE], 20, worker="w", lease_for=30)
    assert_set_aside(found[0])


async def test_a_lapsed_lease_with_garbage_attempts_is_recovered_as_dead(
    redis: RedisBackend,
) -> None:
    healthy, victim = await enqueue_batch()
    with anyio.fail_after(BOUND):
        # Leases that lapse at once: the next recover finds them all.
        leases = await redis.claim([QUEUE], 20, worker="w", lease_for=0)
        assert len(leases) == HEALTHY + 1
        await corrupt(redis, victim, "att", b"many")
        await corrupt(redis, healthy[0], "sa", b"soon")
        assert await redis.recover() == HEALTHY + 1
        assert_set_aside(await redis.get(victim))
        assert_set_aside(await redis.get(healthy[0]))
        # The others lapsed with attempts to spare: ready again.
        for job_id in healthy[1:]:
            job = await redis.get(job_id)
            assert job is not None
            assert job.state is JobState.QUEUED
        await check_consistent(redis)


async def test_a_garbage_priority_on_a_released_job_takes_it_aside(
    redis: RedisBackend,
) -> None:
    healthy, victim = await enqueue_batch()
    with anyio.fail_after(BOUND):
        leases = {
            lease.job.id: lease
            for lease in await redis.claim([QUEUE], 20, worker="w", lease_for=30)
        }
        await corrupt(redis, victim, "p", b"high")
        outcomes = [
            Outcome(job_id=i, token=lease.token, state=JobState.QUEUED)
            for i, lease in leases.items()
        ]
        assert await redis.settle(outcomes) == [True] * (HEALTHY + 1)
        assert_set_aside(await redis.get(victim))
        again = await redis.claim([QUEUE], 20, worker="w", lease_for=30)
        assert sorted(lease.job.id for lease in again) == healthy
        await check_consistent(redis)


async def test_a_garbage_result_ttl_completes_the_job_and_keeps_it(redis: RedisBackend) -> None:
    _, victim = await enqueue_batch()
    await corrupt(redis, victim, "t", b"a while")
    with anyio.fail_after(BOUND):
        await run_until_idle(app, timeout=BOUND)
        job = await redis.get(victim)
        assert job is not None
        assert job.state is JobState.COMPLETED
        assert await redis.prune() == 0
        await check_consistent(redis)


async def test_a_healthy_claim_reads_the_batch_whole(
    redis: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncq.backends.redis import codec

    await enqueue_batch()

    def never(*args: object) -> object:
        raise AssertionError("a healthy batch is not read job by job")

    monkeypatch.setattr(codec, "_leases_apart", never)
    with anyio.fail_after(BOUND):
        leases = await redis.claim([QUEUE], 20, worker="w", lease_for=30)
    assert len(leases) == HEALTHY + 1
