"""Cron schedules: a job enqueued on every tick of a cron expression, once across all workers.

Every worker of the app runs the schedules (``App.default_services``), and each
of them keeps the *next* tick of every schedule enqueued ahead of time, as a
``scheduled`` job with the idempotency key ``cron:{name}:{tick}``. While that
job waits for its time it holds its key, so however many workers race to
enqueue the same tick, one job is stored; once the tick has passed, workers
only ever enqueue later ticks, so a tick whose job already ran (or died) is
never enqueued again.

After downtime (no worker running across one or more ticks) the job that was
waiting for the first missed tick is still in the store and runs as soon as a
worker is back: one catch-up run, however many ticks were missed. A schedule
that has never had a worker running has nothing to catch up.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import msgspec

from ._handler import Handler
from .exceptions import AsyncqError, ConfigurationError

if TYPE_CHECKING:
    from ._app import App
    from ._worker_types import ServiceContext

__all__ = ["DEFAULT_PAYLOAD", "CronRunner", "CronSchedule", "add_schedule", "run_schedules"]

log = logging.getLogger("asyncq.cron")


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT_PAYLOAD"


#: ``payload=`` left out: the schema built from no fields (a Struct whose fields all have defaults).
DEFAULT_PAYLOAD: Any = _Default()


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError as exc:
        msg = f"cron schedules need croniter: pip install 'asyncq[cron]' ({exc})"
        raise ConfigurationError(msg) from exc
    return croniter


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {tz!r} (use an IANA name such as 'Europe/Paris', or 'UTC')"
        raise ConfigurationError(msg) from exc


@dataclass(eq=False)
class CronSchedule:
    """One schedule: a job, the cron expression that fires it, and the payload it gets.

    Attributes:
        name: unique among the app's schedules; part of every tick's key.
        expression: five fields (minute hour day month weekday), or six with
            seconds last (``* * * * * */5``: every five seconds).
        tz: the zone the expression is read in (DST changes follow it).
        handler: the job enqueued on each tick.
        payload: what each tick's job gets.
        queue: where the jobs go (default: the handler's queue).
    """

    name: str
    expression: str
    tz: tzinfo
    handler: Handler[Any, Any]
    payload: Any
    queue: str
    _cron: Any = field(repr=False, default=None)

    def __post_init__(self) -> None:
        croniter = _croniter()
        if not croniter.is_valid(self.expression):
            msg = (
                f"cron schedule {self.name!r}: {self.expression!r} is not a cron expression "
                "(five fields: minute hour day month weekday; a sixth is seconds)"
            )
            raise ConfigurationError(msg)
        self._cron = croniter

    def next_after(self, when: float) -> float:
        """The first tick strictly after ``when`` (epoch seconds)."""
        start = datetime.fromtimestamp(when, self.tz)
        tick: datetime = self._cron(self.expression, start).get_next(datetime)
        return tick.timestamp()

    def key(self, tick: float) -> str:
        """The idempotency key of the job for ``tick``: ``cron:{name}:{UTC ISO time}``."""
        moment = datetime.fromtimestamp(tick, UTC)
        return f"cron:{self.name}:{moment.strftime('%Y-%m-%dT%H:%M:%SZ')}"

    async def ensure(self, app: App, tick: float) -> bool:
        """Enqueue the job for ``tick`` unless it is already stored; whether this call stored it."""
        at = datetime.fromtimestamp(tick, UTC)
        record = self.handler.record(self.payload, at=at, key=self.key(tick), queue=self.queue)
        (stored,) = await app.enqueue_records([record])
        return stored.id == record.id

    def describe(self) -> str:
        """``'*/5 * * * *' (Europe/Paris)``, for messages."""
        return f"{self.expression!r} ({self.tz})"


def add_schedule(
    app: App,
    handler: object,
    expression: str,
    *,
    tz: str | tzinfo | None = None,
    name: str | None = None,
    payload: Any = DEFAULT_PAYLOAD,
    queue: str | None = None,
) -> CronSchedule:
    """Register a schedule on ``app`` (``@app.cron`` ends here); its workers run them all.

    Raises:
        ConfigurationError: croniter is missing, the expression or zone is
            invalid, the name is taken, or no payload can be built.
        ValidationError: ``payload`` does not match the handler's schema.
    """
    if not isinstance(handler, Handler):
        msg = (
            "@app.cron decorates a job: put it above @app.job(...), "
            f"not on {getattr(handler, '__qualname__', handler)!r}"
        )
        raise ConfigurationError(msg)
    if handler.fn is None:
        msg = f"cron schedule for {handler.name!r}: a job declared with app.handle() has no worker"
        raise ConfigurationError(msg)
    schedule_name = name or handler.name
    if schedule_name in app.cron_schedules:
        msg = (
            f"two cron schedules are named {schedule_name!r} in app {app.name!r}; "
            "give one of them name=..."
        )
        raise ConfigurationError(msg)
    if payload is DEFAULT_PAYLOAD:
        try:
            payload = msgspec.convert({}, handler.schema)
        except (msgspec.ValidationError, TypeError) as exc:
            msg = (
                f"cron schedule {schedule_name!r}: pass payload=... (the schema of job "
                f"{handler.name!r} cannot be built from no fields: {exc})"
            )
            raise ConfigurationError(msg) from exc
    schedule = CronSchedule(
        name=schedule_name,
        expression=expression,
        tz=_zone(tz),
        handler=handler,
        payload=payload,
        queue=queue or handler.options.queue,
    )
    # A bad payload, queue or schedule name (in the key) fails now, not on every tick.
    handler.record(payload, key=schedule.key(0.0), queue=schedule.queue)
    app.cron_schedules[schedule_name] = schedule
    return schedule


class CronRunner:
    """One worker's side of the schedules: which tick of each it has made sure is enqueued.

    Args:
        app: the app whose ``cron_schedules`` are run.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.ensured: dict[str, float] = {}

    async def step(self, now: float) -> float:
        """Make sure each schedule's first tick after ``now`` is enqueued; return the earliest.

        Returns ``inf`` when the app has no schedule.

        Raises:
            BackendError: the store could not take a job; the next step tries again.
        """
        wake = math.inf
        for schedule in list(self.app.cron_schedules.values()):
            tick = schedule.next_after(now)
            if self.ensured.get(schedule.name) != tick:
                if await schedule.ensure(self.app, tick):
                    log.info("cron %s: enqueued %s", schedule.name, schedule.key(tick))
                self.ensured[schedule.name] = tick
            wake = min(wake, tick)
        return wake


async def run_schedules(service: ServiceContext, *, clock: Callable[[], float] = time.time) -> None:
    """A worker service: keep the next tick of every schedule enqueued, until cancelled."""
    runner = CronRunner(service.app)
    failures = 0
    while True:
        try:
            wake = await runner.step(clock())
        except AsyncqError as exc:
            # The worker goes on; the schedules are tried again after a pause.
            failures += 1
            delay = min(0.1 * 2**failures, 5.0)
            log.warning("cron: enqueueing the next run failed (%s); retrying in %.1fs", exc, delay)
            await anyio.sleep(delay)
            continue
        failures = 0
        if wake == math.inf:
            await anyio.sleep(60.0)  # no schedule yet: one may be added while the worker runs
        else:
            # Just past the tick, so the next step looks at the tick after it.
            await anyio.sleep(max(wake - clock(), 0.0) + 0.001)
