"""Bounded input: payload size and nesting, and the rules for queue, job and key names.

Producers refuse what breaks a limit before anything is stored; a worker
handed stored bytes that break one (written past the producer's checks)
dead-letters that job alone and keeps running the others.
"""

from __future__ import annotations

import random
import re
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError, ErrorKind, JobState, ValidationError
from asyncq._codec import MAX_DEPTH, encode
from asyncq._options import MAX_KEY_LENGTH, MAX_NAME_LENGTH
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


# -- names -----------------------------------------------------------------------------

BAD_NAMES = {
    "empty": ("", "must be a non-empty name"),
    "nul": ("jobs\x00x", "control character U+0000"),
    "escape": ("\x1b[2Jjobs", "control character U+001B"),
    "newline": ("a\nb", "control character U+000A"),
    "c1": ("a\x9bb", "control character U+009B"),
    "separator": ("a\u2028b", "control character U+2028"),
    "bidi": ("abc\u202eexe.txt", "control character U+202E"),
    "long": (
        "q" * (MAX_NAME_LENGTH + 1),
        f"is 201 characters long; the limit is {MAX_NAME_LENGTH}",
    ),
    "huge": ("q" * 10_000, "is 10,000 characters long"),
}
BAD_KEYS = {
    **{k: v for k, v in BAD_NAMES.items() if k not in ("long", "huge")},
    "long": ("k" * (MAX_KEY_LENGTH + 1), f"401 characters long; the limit is {MAX_KEY_LENGTH}"),
}


async def noop(payload: Item) -> None:
    pass


@pytest.mark.parametrize(("queue", "rule"), BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_queue_name_is_refused_at_registration(queue: str, rule: str) -> None:
    app = App("limits")
    with pytest.raises(ConfigurationError, match=re.escape(rule)) as info:
        app.job(schema=Item, name="item", queue=queue)(noop)
    if queue:  # the empty queue is refused by JobOptions, before the name is known
        assert str(info.value).startswith("job 'item': queue ")
    with pytest.raises(ConfigurationError, match=re.escape(rule)):
        app.handle("item", schema=Item, queue=queue)
    assert app.handlers == {}


@pytest.mark.parametrize(("name", "rule"), BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_bad_job_name_is_refused_at_registration(name: str, rule: str) -> None:
    app = App("limits")
    if name:  # name="" means the default name
        with pytest.raises(ConfigurationError, match=re.escape(rule)) as info:
            app.job(schema=Item, name=name, queue="work")(noop)
        assert str(info.value).startswith("job name ")
        assert "(the job's queue: 'work')" in str(info.value)
    with pytest.raises(ConfigurationError, match=re.escape(rule)):
        app.handle(name, schema=Item)
    assert app.handlers == {}


BAD_OPTIONS = {
    **{f"queue-{k}": ("queue", *v) for k, v in BAD_NAMES.items()},
    **{f"key-{k}": ("key", *v) for k, v in BAD_KEYS.items()},
    **{f"id-{k}": ("id", *v) for k, v in BAD_KEYS.items()},
}


@pytest.mark.parametrize(("option", "value", "rule"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
async def test_a_bad_queue_key_or_id_is_refused_at_enqueue(
    option: str, value: str, rule: str
) -> None:
    app, _, item = make_app()
    bad: Any = {option: value}
    with anyio.fail_after(5):
        with pytest.raises(ConfigurationError, match=f"^job 'item': {option} .*{re.escape(rule)}"):
            await item.enqueue(Item(1), **bad)
        with pytest.raises(ConfigurationError, match=re.escape(rule)):
            await item.enqueue_and_wait(Item(1), timeout=1, **bad)
        with pytest.raises(ConfigurationError, match=re.escape(rule)):
            item.record(Item(1), **bad)
        with pytest.raises(ConfigurationError, match=re.escape(rule)):
            await app.admin.enqueue("item", {"n": 1}, **bad)
        if option == "queue":  # a key or an id names one job: enqueue_many takes them per item
            with pytest.raises(ConfigurationError, match=re.escape(rule)):
                await item.enqueue_many([Item(1)], queue=value)
        else:
            with pytest.raises(ConfigurationError, match=re.escape(rule)):
                await item.enqueue_many([(Item(1), bad)])
        assert await app.backend.list_jobs() == []


def test_a_name_that_is_not_a_str_is_refused() -> None:
    app = App("limits")
    with pytest.raises(ConfigurationError, match="queue must be a str, got int"):
        app.job(schema=Item, name="item", queue=5)(noop)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="key must be a str, got int"):
        make_app()[2].record(Item(1), key=5)


def heavy(length: int, seed: int) -> str:
    """``length`` characters of four UTF-8 bytes each, random so no store can compress them."""
    chars = random.Random(seed)
    return "".join(chr(chars.randrange(0x10000, 0x30000)) for _ in range(length))


async def test_the_longest_names_fit_every_store(backend: Backend) -> None:
    # PostgreSQL's (queue, key) index row would exceed its 2,704 bytes with 500-character keys.
    queue = heavy(MAX_NAME_LENGTH, 1)
    app = App("limits", backend=backend, telemetry=False)

    @app.job(schema=Item, name=heavy(MAX_NAME_LENGTH, 2), queue=queue)
    async def item(payload: Item) -> int:
        return payload.n

    key = heavy(MAX_KEY_LENGTH, 3)
    with anyio.fail_after(30):
        first = await item.enqueue(Item(3), key=key)
        again = await item.enqueue(Item(4), key=key)
        await run_until_idle(app, queues=[queue])
        assert await first.result(timeout=5) == 3
    assert not again.created
    assert again.id == first.id


async def test_ordinary_names_with_spaces_and_accents_are_accepted() -> None:
    app = App("limits", backend=MemoryBackend(), telemetry=False)

    @app.job(schema=Item, name="rapports mensuels", queue="facturation été")
    async def item(payload: Item) -> int:
        return payload.n

    with anyio.fail_after(5):
        handle = await item.enqueue(Item(1), key="commande n° 42 😀", queue="file d'attente")
        assert (await handle.info()).queue == "file d'attente"


@pytest.mark.parametrize(
    ("options", "rule"),
    [({"name": "nightly\nreport"}, "U+000A"), ({"queue": "q\x00"}, "U+0000")],
    ids=["name", "queue"],
)
def test_a_cron_schedule_with_a_bad_name_is_refused_when_declared(
    options: dict[str, str], rule: str
) -> None:
    app = App("limits")
    item = app.job(schema=Item, name="item")(noop)
    with pytest.raises(ConfigurationError, match=re.escape(rule)):
        app.cron("0 3 * * *", payload=Item(1), **options)(item)
    assert app.cron_schedules == {}


async def test_admin_refuses_self_reference_and_deep_json_with_validation_error() -> None:
    app = App("admin-limits", backend="memory://")

    @app.job(schema=dict[str, Any], name="loose")
    async def loose(payload: dict[str, Any]) -> None:
        return None

    looped: dict[str, Any] = {}
    looped["self"] = looped
    async with app:
        with pytest.raises(ValidationError, match="loose"):
            await app.admin.enqueue("loose", looped)
        with pytest.raises(ValidationError, match="nested too deeply"):
            await app.admin.enqueue_json("loose", '{"a":' + "[" * 5000 + "]" * 5000 + "}")
        assert await app.backend.list_jobs() == []
