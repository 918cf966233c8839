"""Flow control through the app: ``app.limit``, ``@app.job(limits=...)``, on every store.

The handlers measure what the limits promise (how many run at once, per key),
while a worker with room for more runs them; jobs without limits in the same
queue keep flowing past the ones held back.
"""

from __future__ import annotations

import anyio
import msgspec
import pytest

from asyncq import (
    App,
    CircuitOpen,
    ConfigurationError,
    ErrorKind,
    JobState,
    Limit,
    RetryPolicy,
    ValidationError,
)
from asyncq.backends.base import Backend

pytestmark = pytest.mark.anyio

BOUND = 30.0


class Mail(msgspec.Struct):
    tenant: str
    n: int = 0


class Peak:
    """How many handlers run at once, overall and per key, at most."""

    def __init__(self) -> None:
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}

    async def run(self, key: str, seconds: float) -> None:
        self.now[key] = self.now.get(key, 0) + 1
        self.most[key] = max(self.most.get(key, 0), self.now[key])
        try:
            await anyio.sleep(seconds)  # the work: long enough for jobs to overlap
        finally:
            self.now[key] -= 1


def test_a_limit_needs_a_rate_or_a_concurrency() -> None:
    app = App("flow", backend="memory://")
    with pytest.raises(ConfigurationError, match="rate=, concurrency= or both"):
        app.limit("smtp")
    with pytest.raises(ConfigurationError, match="concurrency must be an int"):
        app.limit("smtp", concurrency=0)
    with pytest.raises(ConfigurationError, match="rate must be a positive"):
        app.limit("smtp", rate=0)
    smtp = app.limit("smtp", rate=100, concurrency=10)
    assert isinstance(smtp, Limit)
    assert repr(smtp) == "Limit('smtp', rate=100, per=1, concurrency=10)"
    with pytest.raises(ConfigurationError, match="already has a limit named 'smtp'"):
        app.limit("smtp", rate=1)


async def test_a_key_that_cannot_be_computed_is_refused_at_enqueue() -> None:
    app = App("flow", backend="memory://")
    tenant = app.limit("tenant", concurrency=2, key=lambda p: p.missing)

    @app.job(schema=Mail, limits=[tenant])
    async def send(payload: Mail) -> None:
        return None

    with pytest.raises(ValidationError, match="the key of limit 'tenant' could not be computed"):
        await send.enqueue(Mail("a"))


async def test_concurrency_never_exceeded_while_plain_jobs_flow(backend: Backend) -> None:
    app = App("flow", backend=backend)
    smtp = app.limit("smtp", concurrency=2)
    peak = Peak()
    plain_done = anyio.Event()
    plain_count = 0

    @app.job(schema=Mail, name="send", limits=[smtp])
    async def send(payload: Mail) -> None:
        await peak.run("smtp", 0.05)

    @app.job(schema=Mail, name="ping")
    async def ping(payload: Mail) -> None:
        nonlocal plain_count
        plain_count += 1
        if plain_count == 5:
            plain_done.set()

    with anyio.fail_after(BOUND):
        sent = await send.enqueue_many([Mail("t", n) for n in range(12)])
        await ping.enqueue_many([Mail("t", n) for n in range(5)])
        async with app.worker(concurrency=8, poll_interval=0.05):
            await plain_done.wait()
            for handle in sent:
                await handle.result(timeout=BOUND)
        infos = [await handle.info() for handle in sent]
    assert peak.most["smtp"] == 2
    assert all(info.state is JobState.COMPLETED and info.attempts == 1 for info in infos)
    (state,) = [s for s in await app.admin.limits() if s.slot == "smtp"]
    assert (state.running, state.held) == (0, 0)
    await app.close()


async def test_keyed_concurrency_per_tenant(backend: Backend) -> None:
    app = App("flow", backend=backend)
    tenant = app.limit("tenant", concurrency=2, key=lambda p: p.tenant)
    peak = Peak()

    @app.job(schema=Mail, name="send", limits=[tenant])
    async def send(payload: Mail) -> None:
        await peak.run(payload.tenant, 0.05)
        await peak.run("all", 0)

    with anyio.fail_after(BOUND):
        handles = await send.enqueue_many([Mail(t, n) for n in range(6) for t in ("a", "b", "c")])
        async with app.worker(concurrency=10, poll_interval=0.05):
            for handle in handles:
                await handle.result(timeout=BOUND)
    assert peak.most["a"] == peak.most["b"] == peak.most["c"] == 2
    slots = {s.slot for s in await app.admin.limits()}
    assert {"tenant[a]", "tenant[b]", "tenant[c]"} <= slots
    await app.close()


async def test_a_circuit_opens_holds_jobs_without_attempts_probes_and_closes(
    backend: Backend,
) -> None:
    app = App("flow", backend=backend)
    api = app.circuit("payments-api", failures=2, within=60.0, reset_after=0.5)
    down = True
    failed = 0
    opened = anyio.Event()

    @app.job(
        schema=Mail, name="charge", circuit=api, max_attempts=10, retry=RetryPolicy.fixed(0.05)
    )
    async def charge(payload: Mail) -> None:
        nonlocal failed
        if down:
            failed += 1
            if failed == 2:
                opened.set()
            raise RuntimeError("payments API answered 503")

    with anyio.fail_after(BOUND):
        handles = await charge.enqueue_many([Mail("t", n) for n in range(5)])
        async with app.worker(concurrency=1, prefetch=0, poll_interval=0.05):
            await opened.wait()
            # the failure is counted when the worker settles it, just after the raise
            while True:
                (state,) = [c for c in await app.admin.circuits() if c.name == "payments-api"]
                if state.state == "open":
                    break
                await anyio.sleep(0.01)
            assert state.opened_at is not None
            down = False
            for handle in handles:
                await handle.result(timeout=BOUND)
        infos = [await handle.info() for handle in handles]
    # Two failures open the circuit (a worker settling in the background may
    # start a few more before its settle lands: the store counts at settle);
    # then no job waiting behind it used an attempt: one per failure, one per success.
    assert failed >= 2
    assert sum(info.attempts for info in infos) == 5 + failed
    assert {c.state for c in await app.admin.circuits()} == {"closed"}
    await app.close()


async def test_circuit_open_raised_opens_at_once_with_its_own_kind(backend: Backend) -> None:
    app = App("flow", backend=backend)
    api = app.circuit("payments-api", failures=100, reset_after=60.0)
    raised = anyio.Event()

    @app.job(schema=Mail, name="charge", circuit=api, max_attempts=3, retry=RetryPolicy.fixed(0))
    async def charge(payload: Mail) -> None:
        raised.set()
        raise CircuitOpen("payments API is down for maintenance")

    with anyio.fail_after(BOUND):
        first = await charge.enqueue(Mail("t"))
        async with app.worker(concurrency=1, prefetch=0, poll_interval=0.05):
            await raised.wait()
            # the settle follows the raise in the worker
            while True:
                info = await first.info()
                if info.state is not JobState.ACTIVE:
                    break
                await anyio.sleep(0.01)
        assert info.last_error is not None
        assert info.last_error.kind is ErrorKind.CIRCUIT_OPEN
        assert info.attempts == 1
        # its retry is due, but its circuit is open: no claim takes it
        assert await backend.claim(["default"], 5, worker="w", lease_for=5) == []
        held = await first.info()
        assert (held.state, held.hold) == (JobState.QUEUED, "circuit:payments-api")
        assert (await first.info()).attempts == 1
        (state,) = [c for c in await app.admin.circuits() if c.name == "payments-api"]
        assert state.state == "open"
        (closed,) = [
            c
            for c in await app.admin.close_circuit("payments-api")
            if not c.queue or c.queue == "default"
        ]
        assert closed.state == "closed"
    await app.close()
