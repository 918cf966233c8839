"""The shared backend kit (``asyncq/backends/_common.py``) and ``Retention``.

The job rules are checked at their edges; retention also through the memory
backend's ``prune`` on a fake clock, in the conformance suite's style; the
waiters under concurrency; the URL masker on every shape a password takes;
the option parser on what it takes, converts and refuses.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from msgspec.structs import replace

from asyncq._records import ErrorKind, JobRecord, JobState
from asyncq.backends import from_url
from asyncq.backends._common import (
    RETENTION_OPTIONS,
    Waiters,
    as_enqueued,
    expires_at,
    flag,
    holds_key,
    integer,
    is_ready,
    lease_lapsed,
    lost_error,
    mask_url,
    optional_seconds,
    parse_url_options,
    pop_retention,
    prunable,
    result_expired,
    seconds,
    text,
)
from asyncq.backends.base import Retention
from asyncq.backends.memory import MemoryBackend
from asyncq.exceptions import ConfigurationError

from . import _records as r

pytestmark = pytest.mark.anyio

BOUND = 10.0
NOW = 1_000_000.0
DAY = 86_400.0


def at(state: JobState, **changes: Any) -> JobRecord:
    """A job in ``state``, its times around ``NOW``."""
    return replace(r.job(), **{"enqueued_at": NOW, "scheduled_at": NOW, "state": state, **changes})


# -- job rules ----------------------------------------------------------------------


def test_a_job_asked_for_now_is_queued_at_the_store_clock() -> None:
    asked = replace(r.job(), enqueued_at=NOW + 30, scheduled_at=NOW + 30)  # producer ahead
    stored = as_enqueued(asked, NOW)
    assert (stored.state, stored.scheduled_at) == (JobState.QUEUED, NOW)
    behind = replace(r.job(), enqueued_at=NOW - 5, scheduled_at=NOW - 5)
    assert as_enqueued(behind, NOW).scheduled_at == NOW - 5


def test_a_delayed_job_waits_until_due() -> None:
    later = replace(r.job(), enqueued_at=NOW, scheduled_at=NOW + 10)
    assert as_enqueued(later, NOW).state is JobState.SCHEDULED
    assert as_enqueued(later, NOW + 10).state is JobState.QUEUED
    assert as_enqueued(later, NOW).scheduled_at == NOW + 10


@pytest.mark.parametrize(
    ("state", "scheduled_at", "ready"),
    [
        (JobState.QUEUED, NOW + 100, True),
        (JobState.SCHEDULED, NOW, True),
        (JobState.SCHEDULED, NOW + 0.001, False),
        (JobState.FAILED, NOW - 1, True),
        (JobState.FAILED, NOW + 1, False),
        (JobState.ACTIVE, NOW - 1, False),
        (JobState.COMPLETED, NOW - 1, False),
    ],
)
def test_ready_now(state: JobState, scheduled_at: float, ready: bool) -> None:
    assert is_ready(at(state, scheduled_at=scheduled_at), NOW) is ready


def test_a_lease_lapses_at_its_expiry() -> None:
    active = at(JobState.ACTIVE, lease_expires_at=NOW)
    assert lease_lapsed(active, NOW)
    assert not lease_lapsed(active, NOW - 0.001)
    assert not lease_lapsed(at(JobState.QUEUED, lease_expires_at=NOW - 5), NOW)


def test_a_lapsed_lease_is_recorded_as_a_lost_attempt_of_its_worker() -> None:
    error = lost_error(at(JobState.ACTIVE, attempts=2, worker="host:7"), NOW)
    assert error.kind is ErrorKind.LOST
    assert (error.attempt, error.at) == (2, NOW)
    assert "worker host:7" in error.message


@pytest.mark.parametrize(
    "state", [JobState.SCHEDULED, JobState.QUEUED, JobState.ACTIVE, JobState.FAILED]
)
def test_an_unfinished_job_holds_its_key(state: JobState) -> None:
    assert holds_key(at(state, key="k"), NOW + 10 * DAY)


@pytest.mark.parametrize("state", [JobState.DEAD, JobState.CANCELLED])
def test_dead_and_cancelled_free_their_key(state: JobState) -> None:
    assert not holds_key(at(state, key="k", finished_at=NOW), NOW)


def test_a_completed_job_holds_its_key_for_its_result_ttl() -> None:
    done = at(JobState.COMPLETED, key="k", finished_at=NOW, result_ttl=60.0)
    assert holds_key(done, NOW + 59.9)
    assert not holds_key(done, NOW + 60)
    assert not result_expired(done, NOW + 59.9)
    assert result_expired(done, NOW + 60)
    assert expires_at(done) == NOW + 60
    forever = replace(done, result_ttl=None)
    assert holds_key(forever, NOW + 100 * DAY)
    assert not result_expired(forever, NOW + 100 * DAY)
    assert expires_at(forever) is None
    assert expires_at(at(JobState.DEAD, finished_at=NOW, result_ttl=60.0)) is None


# -- Retention ----------------------------------------------------------------------


def test_retention_defaults_and_per_state() -> None:
    keep = Retention()
    assert (keep.completed, keep.dead, keep.cancelled) == (DAY, 14 * DAY, 14 * DAY)
    assert keep.keep_for(JobState.COMPLETED) == DAY
    assert keep.keep_for(JobState.DEAD) == 14 * DAY
    assert keep.keep_for(JobState.CANCELLED) == 14 * DAY
    assert keep.keep_for(JobState.QUEUED) is None


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan, True, "60"])
def test_retention_refuses_what_is_not_seconds(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="Retention dead"):
        Retention(dead=bad)


def test_retention_takes_zero_and_none() -> None:
    assert Retention(completed=0, dead=None).dead is None


@pytest.mark.parametrize(
    ("job", "deleted_after"),
    [
        (at(JobState.COMPLETED, finished_at=NOW), 100.0),
        (at(JobState.DEAD, finished_at=NOW), 200.0),
        (at(JobState.CANCELLED, finished_at=NOW), 300.0),
        # A result_ttl decides for its job, shorter or longer than the retention.
        (at(JobState.COMPLETED, finished_at=NOW, result_ttl=10.0), 10.0),
        (at(JobState.COMPLETED, finished_at=NOW, result_ttl=1000.0), 1000.0),
    ],
)
def test_prunable_after_the_retention_of_its_state(job: JobRecord, deleted_after: float) -> None:
    keep = Retention(completed=100.0, dead=200.0, cancelled=300.0)
    assert not prunable(job, NOW + deleted_after - 0.5, keep)
    assert prunable(job, NOW + deleted_after + 0.5, keep)


@pytest.mark.parametrize("state", [JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED])
def test_none_keeps_for_ever(state: JobState) -> None:
    keep = Retention(completed=None, dead=None, cancelled=None)
    assert not prunable(at(state, finished_at=NOW), NOW + 1000 * DAY, keep)


@pytest.mark.parametrize(
    "state", [JobState.SCHEDULED, JobState.QUEUED, JobState.ACTIVE, JobState.FAILED]
)
def test_unfinished_jobs_are_never_pruned(state: JobState) -> None:
    keep = Retention(completed=0, dead=0, cancelled=0)
    assert not prunable(at(state, finished_at=NOW - DAY), NOW, keep)


def test_pop_retention_takes_its_options_and_leaves_the_rest() -> None:
    options: dict[str, Any] = {"retention_dead": None, "retention_completed": 5.0, "other": 1}
    assert pop_retention(options) == Retention(completed=5.0, dead=None)
    assert options == {"other": 1}
    base = Retention(completed=1.0, dead=2.0, cancelled=3.0)
    assert pop_retention({"retention": base}) is base
    assert pop_retention({"retention": base, "retention_cancelled": 9.0}) == Retention(
        completed=1.0, dead=2.0, cancelled=9.0
    )
    assert pop_retention({}) == Retention()
    with pytest.raises(ConfigurationError, match="must be a Retention"):
        pop_retention({"retention": 60})
    with pytest.raises(ConfigurationError, match="Retention completed"):
        pop_retention({"retention_completed": -1})


# -- retention on the memory backend (a store's prune, in the conformance style) ------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


async def finish(backend: MemoryBackend, ending: str, **fields: Any) -> JobRecord:
    [stored] = await backend.enqueue([replace(r.job(**fields), enqueued_at=NOW, scheduled_at=NOW)])
    [lease] = await backend.claim([r.QUEUE], 1, worker="w", lease_for=60.0)
    outcome = {"completed": r.completed, "dead": r.dead, "cancelled": r.cancelled}[ending](lease)
    assert await backend.settle([outcome]) == [True]
    job = await backend.get(stored.id)
    assert job is not None
    return job


async def test_prune_keeps_each_state_for_its_retention() -> None:
    clock = Clock()
    keep = Retention(completed=100.0, dead=200.0, cancelled=300.0)
    backend = MemoryBackend(clock=clock, retention=keep)
    await backend.open()
    completed = await finish(backend, "completed", key="c")
    dead = await finish(backend, "dead")
    cancelled = await finish(backend, "cancelled")
    short = await finish(backend, "completed", result_ttl=10.0)
    [waiting] = await backend.enqueue([replace(r.job(), enqueued_at=NOW, scheduled_at=NOW)])
    alive = [completed, dead, cancelled, short, waiting]
    for after, gone in [(5.0, []), (50.0, [short]), (150, [completed]), (250, [dead])]:
        clock.now = NOW + after
        assert await backend.prune() == len(gone)
        alive = [job for job in alive if job not in gone]
        for job in alive:
            assert await backend.get(job.id) is not None
    clock.now = NOW + 350
    assert await backend.prune() == 1
    assert await backend.get(cancelled.id) is None
    assert await backend.get(waiting.id) is not None
    assert await backend.prune() == 0
    # The completed job's key went with it.
    [again] = await backend.enqueue([r.job(key="c")])
    assert again.id != completed.id


async def test_memory_keeps_finished_jobs_for_the_default_retention() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    await backend.open()
    done = await finish(backend, "completed")
    dead = await finish(backend, "dead")
    clock.now = NOW + DAY - 1
    assert await backend.prune() == 0
    clock.now = NOW + DAY + 1
    assert await backend.prune() == 1
    assert await backend.get(done.id) is None
    clock.now = NOW + 14 * DAY + 1
    assert await backend.prune() == 1
    assert await backend.get(dead.id) is None


def test_memory_takes_retention_from_its_url_and_keywords() -> None:
    backend = from_url("memory://?retention_completed=60&retention_dead=none")
    assert isinstance(backend, MemoryBackend)
    assert backend.retention == Retention(completed=60.0, dead=None)
    keyword = MemoryBackend.from_url("memory://?retention_completed=60", retention_completed=5)
    assert keyword.retention.completed == 5
    given = Retention(cancelled=1.0)
    assert MemoryBackend.from_url("memory://", retention=given).retention is given
    assert MemoryBackend.from_url().retention == Retention()


def test_memory_refuses_an_unknown_url_option() -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown option 'retention_done'.*retention_dead"
    ):
        from_url("memory://?retention_done=60")
    with pytest.raises(ConfigurationError, match=r"'retention_dead'.*seconds"):
        from_url("memory://?retention_dead=soon")


# -- waiters ------------------------------------------------------------------------


async def test_a_job_waiter_is_woken_by_its_job_only() -> None:
    waiters = Waiters()
    with waiters.job_waiter("a") as a, waiters.job_waiter("b") as b:
        waiters.wake_job("b")
        assert b.is_set()
        assert not a.is_set()
        waiters.wake_jobs(["a", "c"])
        assert a.is_set()
    assert len(waiters) == 0


async def test_a_wake_before_the_wait_is_kept() -> None:
    waiters = Waiters()
    with anyio.fail_after(BOUND), waiters.job_waiter("a") as event:
        waiters.wake_job("a")
        await event.wait()


async def test_job_waiters_share_one_event_until_woken() -> None:
    waiters = Waiters()
    woken: list[int] = []

    async def wait(n: int) -> None:
        with waiters.job_waiter("a") as event:
            await event.wait()
        woken.append(n)

    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(wait, n)
            await anyio.wait_all_tasks_blocked()
            assert len(waiters) == 1
            waiters.wake_job("a")
    assert sorted(woken) == [0, 1, 2]
    # A waiter registering after the wake gets a fresh event.
    with waiters.job_waiter("a") as event:
        assert not event.is_set()
    assert len(waiters) == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    waiters = Waiters()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                with waiters.job_waiter("a") as job, waiters.work_waiter(["q1", "q2"]) as work:
                    await job.wait()
                    await work.wait()

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert len(waiters) == 3
            tg.cancel_scope.cancel()
    assert len(waiters) == 0


async def test_a_work_waiter_is_woken_by_any_of_its_queues() -> None:
    waiters = Waiters()
    with waiters.work_waiter(["q1", "q2", "q1"]) as both, waiters.work_waiter(["q3"]) as other:
        waiters.wake_queue("q9")
        assert not both.is_set()
        waiters.wake_queues(["q2"])
        assert both.is_set()
        assert not other.is_set()
        waiters.wake_work()
        assert other.is_set()
    assert len(waiters) == 0


async def test_wake_all_wakes_jobs_and_work() -> None:
    waiters = Waiters()
    with waiters.job_waiter("a") as job, waiters.work_waiter(["q"]) as work:
        waiters.wake_all()
        assert job.is_set()
        assert work.is_set()
    assert len(waiters) == 0


async def test_memory_wait_for_work_ignores_other_queues() -> None:
    backend = MemoryBackend()
    await backend.open()
    with anyio.fail_after(BOUND):
        async with anyio.create_task_group() as tg:
            returned = anyio.Event()

            async def wait() -> None:
                await backend.wait_for_work(["mine"], 60.0)
                returned.set()

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await backend.enqueue([r.job(queue="theirs")])
            await anyio.wait_all_tasks_blocked()
            assert not returned.is_set()
            await backend.enqueue([r.job(queue="mine")])
            await returned.wait()


# -- mask_url -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        # Redis URLs
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@host:6379/2", "redis://:***@host:6379/2"),
        ("rediss://alice:s3cret@host/0", "rediss://alice:***@host/0"),
        ("redis://alice:p%40ss@host", "redis://alice:***@host"),
        ("unix:///run/redis.sock?db=3&password=s3cret", "unix:///run/redis.sock?db=3&password=***"),
        ("valkey://u:s3cret@h:1/0?cluster=true", "valkey://u:***@h:1/0?cluster=true"),
        # PostgreSQL DSNs
        (
            "postgresql://h/db?user=u&password=s3cret&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        (
            "postgres://app:s3cret@db.example:5433/jobs?schema=shop",
            "postgres://app:***@db.example:5433/jobs?schema=shop",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql:///db?host=/tmp&password=s3cret", "postgresql:///db?host=/tmp&password=***"),
        ("postgresql://h/db?sslpassword=s3cret", "postgresql://h/db?sslpassword=***"),
        # other names for a password, any case, any scheme
        (
            "weird://h?pwd=s3cret&pass=s3cret&PASSWORD=s3cret&a=1",
            "weird://h?pwd=***&pass=***&PASSWORD=***&a=1",
        ),
        ("redis://h?sentinel_password=s3cret", "redis://h?sentinel_password=***"),
        ("x://h?token=s3cret&secret=s3cret", "x://h?token=***&secret=***"),
        ("x://h?pass%77ord=s3cret", "x://h?pass%77ord=***"),
        ("x://h?password=", "x://h?password=***"),
        # passwords holding what ends an authority, unescaped
        ("redis://:s3/cret@host/0", "redis://:***@host/0"),
        ("redis://:s3?cret@host/0?db=1", "redis://:***@host/0?db=1"),
        ("redis://:s3#cret@host", "redis://:***@host"),
        ("redis://:s3@cret@host", "redis://:***@host"),
        ("redis://:s3=cret@host", "redis://:***@host"),
        # an @ in a query value is not user info
        ("postgresql://h/db?user=alice@corp", "postgresql://h/db?user=alice@corp"),
        # not URLs: masked conservatively
        ("alice:s3cret@host", "***@host"),
        ("host=h password=s3cret dbname=d", "host=h password=*** dbname=d"),
        ("host=h password='s3 cret' dbname=d", "host=h password=*** dbname=d"),
        ("sqlite:///jobs.db", "sqlite:///jobs.db"),
        ("memory://", "memory://"),
        ("", ""),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3" not in mask_url(url)
    assert mask_url(mask_url(url)) == masked


# -- URL options --------------------------------------------------------------------

KNOWN = {"poll_interval": seconds, "limit": integer, "cluster": flag, "schema": text}


def test_options_are_converted_and_taken_out_of_the_url() -> None:
    values, rest = parse_url_options(
        "sqlite:///jobs.db?poll_interval=0.5&limit=3&cluster=YES&schema=a%20b", KNOWN
    )
    assert values == {"poll_interval": 0.5, "limit": 3, "cluster": True, "schema": "a b"}
    assert rest == "sqlite:///jobs.db"


def test_a_url_without_a_query_has_no_options() -> None:
    assert parse_url_options("redis://h:1/0", KNOWN) == ({}, "redis://h:1/0")
    assert parse_url_options("redis://h:1/0?", KNOWN) == ({}, "redis://h:1/0")


def test_the_last_value_of_a_repeated_option_wins() -> None:
    values, _ = parse_url_options("x://h?limit=1&limit=2", KNOWN)
    assert values == {"limit": 2}


def test_an_unknown_option_is_refused_with_the_known_ones_and_no_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_url_options("redis://:s3cret@h/0?socket_timeot=5", KNOWN, driver=["socket_timeout"])
    message = str(caught.value)
    assert "unknown option 'socket_timeot'" in message
    assert "cluster, limit, poll_interval, schema, socket_timeout" in message
    assert "s3cret" not in message
    assert "redis://:***@h/0" in message


def test_driver_options_stay_in_the_url_as_given() -> None:
    values, rest = parse_url_options(
        "redis://:pw@h/0?socket_timeout=5&schema=s&ssl_ca_certs=%2Fca.pem#frag",
        KNOWN,
        driver=["socket_timeout", "ssl_ca_certs"],
    )
    assert values == {"schema": "s"}
    assert rest == "redis://:pw@h/0?socket_timeout=5&ssl_ca_certs=%2Fca.pem#frag"


def test_driver_none_lets_any_other_option_through() -> None:
    values, rest = parse_url_options(
        "postgresql://h/db?sslmode=require&schema=s", KNOWN, driver=None
    )
    assert values == {"schema": "s"}
    assert rest == "postgresql://h/db?sslmode=require"


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ("poll_interval=soon", "number of seconds"),
        ("poll_interval=-1", "number of seconds"),
        ("poll_interval=inf", "number of seconds"),
        ("limit=1.5", "whole number"),
        ("cluster=maybe", "true or false"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_option(query: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        parse_url_options(f"x://u:s3cret@h?{query}", KNOWN)
    assert repr(query.partition("=")[0]) in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_converters() -> None:
    assert seconds("0") == 0.0
    assert optional_seconds("None") is None
    assert optional_seconds("forever") is None
    assert optional_seconds("2.5") == 2.5
    with pytest.raises(ValueError, match="'none'"):
        optional_seconds("-2")
    assert flag("off") is False
    assert flag(" On ") is True
    assert integer("-3") == -3
    assert set(RETENTION_OPTIONS) == {
        "retention_completed",
        "retention_dead",
        "retention_cancelled",
        "retention_max_completed",
        "retention_max_dead",
        "retention_max_cancelled",
        "retention_events",
        "retention_max_events",
    }
