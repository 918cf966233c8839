"""Bounded input: payload size and nesting.

Producers refuse what breaks a limit before anything is stored; a worker
handed stored bytes that break one (written past the producer's checks)
dead-letters that job alone and keeps running the others.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError, ErrorKind, JobState, ValidationError
from asyncq._codec import MAX_DEPTH, encode
from asyncq.backends.base import Backend
from asyncq.backends.memory import MemoryBackend
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio


class Item(msgspec.Struct):
    n: int


class Loose(msgspec.Struct):
    data: Any = None


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def make_app(backend: Backend | None = None, **options: Any) -> tuple[App, Any, Any]:
    app = App("limits", backend=backend or MemoryBackend(), telemetry=False, **options)

    @app.job(schema=Loose, name="loose", queue="work")
    async def loose(payload: Loose) -> int:
        return 1

    @app.job(schema=Item, name="item", queue="work")
    async def item(payload: Item) -> int:
        return payload.n

    return app, loose, item


# -- payloads at enqueue ---------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH, 980, 5_000])
async def test_a_payload_nested_past_the_limit_is_refused_at_enqueue(depth: int) -> None:
    app, loose, _ = make_app()
    with anyio.fail_after(5):
        assert (await loose.enqueue(Loose(nested(MAX_DEPTH - 1)))).created  # the limit, exactly
        with pytest.raises(ValidationError, match="job 'loose'") as info:
            await loose.enqueue(Loose(nested(depth)))
        assert f"the limit of queue 'work' of {MAX_DEPTH} levels" in str(info.value)
        with pytest.raises(ValidationError, match="job 'loose'"):
            await loose.enqueue_many([Loose(1), Loose(nested(depth))])
        assert len(await app.backend.list_jobs()) == 1


async def test_a_payload_containing_itself_is_refused_at_enqueue() -> None:
    app, loose, _ = make_app()
    cycle: dict[str, Any] = {}
    cycle["again"] = [cycle]
    with anyio.fail_after(5):
        with pytest.raises(ValidationError, match=r"job 'loose'.*or it contains itself"):
            await loose.enqueue(Loose(cycle))
        with pytest.raises(ValidationError, match="or it contains itself"):
            await loose.enqueue_and_wait(Loose(cycle), timeout=1)
        assert await app.backend.list_jobs() == []


async def test_a_payload_over_the_size_limit_is_refused_at_enqueue() -> None:
    app, loose, _ = make_app(max_payload_bytes=1_000)
    assert app.max_payload_bytes == 1_000
    with anyio.fail_after(5):
        await loose.enqueue(Loose("x" * 900))
        with pytest.raises(ValidationError, match="job 'loose'") as info:
            await loose.enqueue(Loose("x" * 1_000), queue="big")
        assert "over the limit of queue 'big' of 1,000 bytes" in str(info.value)
        assert len(await app.backend.list_jobs()) == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, "1MiB", True])
def test_max_payload_bytes_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_payload_bytes must be a positive int"):
        App("limits", max_payload_bytes=value)


# -- payloads at the worker --------------------------------------------------------------


def over_deep(depth: int) -> bytes:
    """A Loose payload whose data nests ``depth`` lists, encoded with no check."""
    return b"\x81\xa4data" + b"\x91" * depth + b"\x01"


async def test_a_stored_payload_over_a_limit_is_dead_lettered_by_the_worker(
    backend: Backend,
) -> None:
    app, loose, item = make_app(backend, max_payload_bytes=60_000)
    with anyio.fail_after(30):
        healthy = await item.enqueue(Item(7))
        template = loose.record(Loose())
        stored = {
            "deep": over_deep(MAX_DEPTH + 1),  # past the limit, well within the stack
            "abysmal": over_deep(50_000),  # past the stack, were it decoded
            "large": encode(Loose("x" * 70_000)),
            "garbage": b"\xc1\xff",
        }
        records = {
            what: msgspec.structs.replace(template, id=f"{template.id}-{what}", payload=payload)
            for what, payload in stored.items()
        }
        await backend.enqueue(list(records.values()))
        worker = await run_until_idle(app)
        done = await backend.get(healthy.id)
        jobs = {what: await backend.get(record.id) for what, record in records.items()}
    assert done is not None
    assert done.state is JobState.COMPLETED
    for what, job in jobs.items():
        assert job is not None
        assert job.state is JobState.DEAD, what
        assert job.attempts == 1
        error = job.errors[-1]
        assert error.kind is ErrorKind.DECODE
        assert error.message.startswith("payload does not decode as"), error.message
    assert f"limit of {MAX_DEPTH} levels" in jobs["deep"].errors[-1].message  # type: ignore[union-attr]
    assert f"limit of {MAX_DEPTH} levels" in jobs["abysmal"].errors[-1].message  # type: ignore[union-attr]
    assert "over the limit of 60,000 bytes" in jobs["large"].errors[-1].message  # type: ignore[union-attr]
    assert worker.processed == 5


async def test_an_unknown_field_too_deep_to_skip_is_dead_lettered_by_the_worker() -> None:
    app, _, item = make_app()
    with anyio.fail_after(10):
        record = item.record(Item(1))
        deep = b"\x82\xa1n\x01\xa5extra" + b"\x91" * 50_000 + b"\x01"
        await app.backend.enqueue([msgspec.structs.replace(record, payload=deep)])
        await run_until_idle(app)
        job = await app.backend.get(record.id)
    assert job is not None
    assert job.state is JobState.DEAD
    assert job.errors[-1].kind is ErrorKind.DECODE
