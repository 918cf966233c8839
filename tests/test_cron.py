"""``@app.cron``: one job per tick across workers, one catch-up after downtime, and its errors."""

from __future__ import annotations

import itertools
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError, JobContext, JobState, ValidationError
from asyncq._cron import CronRunner, CronSchedule, run_schedules
from asyncq.backends.base import Backend

pytestmark = pytest.mark.anyio


class Tick(msgspec.Struct):
    label: str = "tick"


class Needs(msgspec.Struct):
    n: int


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_registration_and_its_errors() -> None:
    app = App("cron-test", backend="memory://")

    @app.cron("*/5 * * * *", tz="Europe/Paris")
    @app.job(schema=Tick, name="tidy")
    async def tidy(payload: Tick) -> None:
        pass

    schedule = app.cron_schedules["tidy"]
    assert schedule.payload == Tick()
    assert schedule.queue == "default"
    assert schedule.tz == ZoneInfo("Europe/Paris")
    assert app.default_services().count(run_schedules) == 1

    app.cron("0 * * * *", name="hourly", payload=Tick("h"), queue="slow")(tidy)
    assert app.cron_schedules["hourly"].queue == "slow"
    assert app.default_services().count(run_schedules) == 1  # one runner for every schedule

    with pytest.raises(ConfigurationError, match="two cron schedules are named 'tidy'"):
        app.cron("* * * * *")(tidy)
    with pytest.raises(ConfigurationError, match="'every day' is not a cron expression"):
        app.cron("every day", name="x")(tidy)
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Olympus'"):
        app.cron("* * * * *", name="y", tz="Mars/Olympus")(tidy)
    with pytest.raises(ValidationError, match="invalid payload for job 'tidy'"):
        app.cron("* * * * *", name="z", payload={"label": 3})(tidy)
    with pytest.raises(ConfigurationError, match=r"put it above @app\.job"):
        app.cron("* * * * *")(lambda: None)  # type: ignore[arg-type]

    @app.job(schema=Needs, name="needs")
    async def needs(payload: Needs) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"pass payload=\.\.\."):
        app.cron("* * * * *")(needs)
    app.cron("* * * * *", payload=Needs(3))(needs)

    remote = app.handle("remote", schema=Tick)
    with pytest.raises(ConfigurationError, match=r"app\.handle\(\)"):
        app.cron("* * * * *")(remote)


def test_a_missing_croniter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    app = App("cron-test", backend="memory://")

    @app.job(schema=Tick, name="tidy")
    async def tidy(payload: Tick) -> None:
        pass

    monkeypatch.setitem(sys.modules, "croniter", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'asyncq\[cron\]'"):
        app.cron("* * * * *")(tidy)


def test_ticks_follow_the_zone_and_keys_are_utc() -> None:
    app = App("cron-test", backend="memory://")

    @app.cron("30 2 * * *", tz="Europe/Paris", name="night")
    @app.cron("*/15 * * * * */20", name="often")
    @app.job(schema=Tick, name="tidy")
    async def tidy(payload: Tick) -> None:
        pass

    night: CronSchedule = app.cron_schedules["night"]
    winter = night.next_after(epoch("2024-01-10T00:00:00+00:00"))
    assert datetime.fromtimestamp(winter, UTC) == datetime(2024, 1, 10, 1, 30, tzinfo=UTC)
    assert night.key(winter) == "cron:night:2024-01-10T01:30:00Z"
    summer = night.next_after(epoch("2024-07-10T00:00:00+00:00"))
    assert night.key(summer) == "cron:night:2024-07-10T00:30:00Z"
    often = app.cron_schedules["often"]
    start = epoch("2024-01-01T10:15:40+00:00")
    assert often.next_after(start) == epoch("2024-01-01T10:30:00+00:00")
    assert often.next_after(epoch("2024-01-01T10:30:00+00:00")) == start - 40 + 15 * 60 + 20


@pytest.fixture
def app(backend: Backend) -> App:
    return App("cron-test", backend=backend)


async def test_workers_keep_the_next_tick_enqueued_once_and_catch_up_once(
    app: App, backend: Backend
) -> None:
    @app.cron("0 * * * *", name="hourly", payload=Tick("h"))
    @app.job(schema=Tick, name="tidy", queue="cron")
    async def tidy(payload: Tick) -> None:
        pass

    schedule = app.cron_schedules["hourly"]
    async with app:
        first, second = CronRunner(app), CronRunner(app)
        t0 = epoch("2030-01-01T10:20:00+00:00")
        assert await first.step(t0) == epoch("2030-01-01T11:00:00+00:00")
        assert await second.step(t0 + 5) == epoch("2030-01-01T11:00:00+00:00")
        jobs = await backend.list_jobs(name="tidy")
        assert [(j.key, j.state) for j in jobs] == [
            ("cron:hourly:2030-01-01T11:00:00Z", JobState.SCHEDULED)
        ]
        assert jobs[0].scheduled_at == epoch("2030-01-01T11:00:00+00:00")
        assert jobs[0].queue == "cron"
        assert msgspec.msgpack.decode(jobs[0].payload, type=Tick) == Tick("h")

        # Every worker is down from 10:30 until 14:10: ticks 11:00 to 14:00 are missed.
        # The 11:00 job waited in the store: it is the one catch-up run. Workers
        # coming back enqueue 15:00 and nothing in between.
        back = epoch("2030-01-01T14:10:00+00:00")
        later = CronRunner(app)
        assert await later.step(back) == epoch("2030-01-01T15:00:00+00:00")
        assert await CronRunner(app).step(back + 1) == epoch("2030-01-01T15:00:00+00:00")
        keys = [j.key for j in await backend.list_jobs(name="tidy")]
        assert keys == ["cron:hourly:2030-01-01T11:00:00Z", "cron:hourly:2030-01-01T15:00:00Z"]
        # Steps before the next tick change nothing.
        assert await later.step(back + 60) == epoch("2030-01-01T15:00:00+00:00")
        assert len(await backend.list_jobs(name="tidy")) == 2
        assert schedule.key(back) == "cron:hourly:2030-01-01T14:10:00Z"


async def test_status_shows_the_next_run(app: App) -> None:
    @app.cron("0 3 * * *", tz="Europe/Paris", name="nightly")
    @app.job(schema=Tick, name="report")
    async def report(payload: Tick) -> None:
        pass

    app.cron("0 4 * * *", name="early", queue="reports")(report)
    async with app:
        status = await app.admin.status()
        assert (await app.admin.status(["elsewhere"])).cron == []
        assert [q.queue for q in status.queues] == ["default", "reports"]
        status = await app.admin.status(["default"])
    [cron] = status.cron
    assert (cron.name, cron.job, cron.queue, cron.expression, cron.tz) == (
        "nightly",
        "report",
        "default",
        "0 3 * * *",
        "Europe/Paris",
    )
    at = datetime.fromtimestamp(cron.next_run, ZoneInfo("Europe/Paris"))
    assert (at.hour, at.minute, at.second) == (3, 0, 0)
    assert 0 < cron.next_run - status.at <= 86_400 + 3600


@pytest.mark.slow
async def test_three_workers_run_a_per_second_schedule_once_per_tick(
    app: App, backend: Backend
) -> None:
    runs: list[str] = []
    enough = anyio.Event()

    @app.cron("* * * * * *", name="every-second")
    @app.job(schema=Tick, name="beat", max_attempts=1)
    async def beat(payload: Tick, ctx: JobContext) -> None:
        runs.append(ctx.job_id)
        if len(runs) >= 3:
            enough.set()

    options = {"concurrency": 2, "poll_interval": 0.2, "heartbeat": 0.2}
    with anyio.fail_after(20):
        async with app.worker(**options), app.worker(**options), app.worker(**options):
            await enough.wait()
    jobs = await backend.list_jobs(name="beat")
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys)), keys  # one job per tick
    stamps = sorted(j.scheduled_at for j in jobs)
    assert [b - a for a, b in itertools.pairwise(stamps)] == [1.0] * (len(jobs) - 1)
    assert keys == [
        "cron:every-second:" + datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for t in stamps
    ]
    assert len(runs) == len(set(runs))
    completed = [j for j in jobs if j.state is JobState.COMPLETED]
    assert {j.id for j in completed} <= set(runs)
    assert len(completed) >= 3
