"""Registering jobs: options, names, producer-only handles, and what a handler may look like."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import (
    App,
    ConfigurationError,
    EnqueueAndWaitArgs,
    EnqueueArgs,
    EnqueueManyArgs,
    Handler,
    Instrumentation,
    JobContext,
    JobOptions,
    JobState,
    RetryPolicy,
    ValidationError,
)
from asyncq._instrumentation import EnqueueNext
from asyncq._options import NO_OPTIONS, EnqueueOptions
from asyncq._records import JobRecord
from asyncq.backends.memory import MemoryBackend


class Resize(msgspec.Struct):
    url: str
    width: int


class Thumb(msgspec.Struct):
    data: bytes


async def resize_fn(payload: Resize) -> bytes:
    return payload.url.encode()


# -- JobOptions ---------------------------------------------------------------------


def test_job_options_defaults() -> None:
    options = JobOptions()
    assert options.queue == "default"
    assert options.timeout is None
    assert options.max_attempts == 3
    assert options.retry == RetryPolicy()
    assert options.priority == 0
    assert options.result_ttl == 86_400.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1, got 0"),
        ({"max_attempts": -3}, "max_attempts must be at least 1, got -3"),
        ({"timeout": 0}, "timeout must be positive seconds or None, got 0"),
        ({"timeout": -1.5}, "timeout must be positive seconds or None, got -1.5"),
        ({"queue": ""}, "queue must be a non-empty name"),
    ],
)
def test_job_options_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        JobOptions(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": dt.timedelta(0)}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"queue": ""}, "queue"),
    ],
)
def test_bad_options_fail_when_the_job_is_declared(kwargs: dict[str, Any], match: str) -> None:
    app = App("options")
    with pytest.raises(ConfigurationError, match=match):
        app.job(schema=Resize, **kwargs)(resize_fn)
    assert app.handlers == {}


def test_job_options_from_the_decorator() -> None:
    app = App("options")
    handler = app.job(
        schema=Resize,
        name="images.resize",
        queue="images",
        timeout=dt.timedelta(seconds=90),
        max_attempts=7,
        retry=RetryPolicy.linear(2),
        retry_on=(OSError,),
        dead_on=(KeyError,),
        priority=-5,
        result_ttl=dt.timedelta(hours=1),
    )(resize_fn)
    options = handler.options
    assert (options.queue, options.timeout, options.max_attempts) == ("images", 90.0, 7)
    assert (options.priority, options.result_ttl) == (-5, 3600.0)
    assert options.retry.kind == "linear"
    assert (options.retry.retry_on, options.retry.dead_on) == ((OSError,), (KeyError,))
    assert handler.schema is Resize
    assert handler.fn is resize_fn
    assert not handler.takes_context
    assert app.queues == ["images"]


def test_result_ttl_none_keeps_results_for_ever() -> None:
    app = App("options")
    handler = app.job(schema=Resize, result_ttl=None)(resize_fn)
    assert handler.options.result_ttl is None


def test_a_retry_policys_own_classification_is_kept() -> None:
    app = App("options")
    policy = RetryPolicy.fixed(1).classify(retry_on=(OSError,), dead_on=(KeyError,))
    handler = app.job(schema=Resize, retry=policy)(resize_fn)
    assert handler.options.retry == policy


# -- names --------------------------------------------------------------------------


def test_the_default_name_is_module_and_qualified_name() -> None:
    app = App("names")
    handler = app.job(schema=Resize)(resize_fn)
    assert handler.name == f"{__name__}.resize_fn"
    assert app.handlers == {handler.name: handler}


def test_duplicate_job_names_are_configuration_errors() -> None:
    app = App("shop")

    @app.job(schema=Resize, name="images.resize")
    async def first(payload: Resize) -> None:
        pass

    with pytest.raises(ConfigurationError, match=r"two jobs are named 'images\.resize' in app"):

        @app.job(schema=Resize, name="images.resize")
        async def second(payload: Resize) -> None:
            pass

    assert app.handlers["images.resize"].fn is first.fn


def test_duplicate_default_names_are_configuration_errors() -> None:
    app = App("shop")
    app.job(schema=Resize)(resize_fn)
    with pytest.raises(ConfigurationError, match="give one of them name="):
        app.job(schema=Resize, queue="other")(resize_fn)


def test_including_the_same_handler_again_is_harmless() -> None:
    app = App("shop")
    handler = app.job(schema=Resize, name="r")(resize_fn)
    app.include(handler)
    assert app.handlers == {"r": handler}


def test_jobs_declared_elsewhere_can_be_included() -> None:
    library = App("library")
    handler = library.job(schema=Resize, name="r")(resize_fn)
    service = App("service", jobs=[handler])
    assert service.handlers == {"r": handler}
    assert handler.app is service  # enqueues now go to the including app's backend
    other = App("other")
    other.job(schema=Resize, name="r")(resize_fn)
    with pytest.raises(ConfigurationError, match="two jobs are named 'r'"):
        other.include(handler)


# -- what a handler may look like -----------------------------------------------------


def test_a_handler_may_take_a_context() -> None:
    app = App("shapes")

    @app.job(schema=Resize, name="with-ctx")
    async def with_ctx(payload: Resize, ctx: JobContext) -> None:
        pass

    @app.job(schema=Resize, name="optional-ctx")
    async def optional_ctx(payload: Resize, ctx: JobContext | None = None) -> None:
        pass

    assert with_ctx.takes_context
    assert optional_ctx.takes_context


def test_a_plain_function_is_a_sync_handler_and_a_generator_is_rejected() -> None:
    app = App("shapes")

    def blocking(payload: Resize) -> bytes:
        return b""

    def chunks(payload: Resize) -> Any:  # a generator
        yield b""

    handler = app.job(schema=Resize, name="blocking")(blocking)
    assert handler.sync
    assert not handler.process
    assert app.job(schema=Resize, name="lambda")(lambda p: p).sync
    with pytest.raises(ConfigurationError, match="not a generator"):
        app.job(schema=Resize, name="chunks")(chunks)
    assert set(app.handlers) == {"blocking", "lambda"}


@pytest.mark.parametrize("arity", [0, 3])
def test_a_handler_takes_payload_and_maybe_context_only(arity: int) -> None:
    app = App("shapes")

    async def none() -> None:
        pass

    async def three(a: Resize, b: JobContext, c: int) -> None:
        pass

    fn = none if arity == 0 else three
    with pytest.raises(ConfigurationError, match=f"not {arity} positional parameters"):
        app.job(schema=Resize, name="bad")(fn)  # type: ignore[arg-type]


def test_a_schema_msgspec_cannot_handle_is_rejected_at_declaration() -> None:
    app = App("shapes")

    class A(msgspec.Struct):
        a: int

    class B(msgspec.Struct):
        b: int

    with pytest.raises(ConfigurationError, match="job 'union': msgspec cannot"):
        app.job(schema=A | B, name="union")(resize_fn)  # type: ignore[arg-type]


def test_the_return_annotation_types_the_result() -> None:
    app = App("results")

    @app.job(schema=Resize, name="thumb")
    async def thumb(payload: Resize) -> Thumb:
        return Thumb(b"")

    @app.job(schema=Resize, name="untyped")
    async def untyped(payload: Resize):  # type: ignore[no-untyped-def]
        return 1

    assert thumb.result_codec.type is Thumb
    assert untyped.result_codec.type is Any


# -- producer-only handles -----------------------------------------------------------


def test_handle_is_a_producer_only_handler() -> None:
    app = App("producer")
    remote: Handler[Resize, bytes] = app.handle(
        "images.resize", schema=Resize, result=bytes, queue="images", max_attempts=5
    )
    assert (remote.name, remote.fn, remote.schema) == ("images.resize", None, Resize)
    assert (remote.options.queue, remote.options.max_attempts) == ("images", 5)
    assert remote.result_codec.type is bytes
    assert remote.app is app
    # Not registered: a worker of this app neither runs it nor listens on its queue.
    assert app.handlers == {}
    assert app.queues == []


def test_handle_does_not_clash_with_a_registered_job() -> None:
    app = App("both")
    handler = app.job(schema=Resize, name="images.resize")(resize_fn)
    remote = app.handle("images.resize", schema=Resize)
    assert app.handlers == {"images.resize": handler}
    assert remote is not handler


def test_handle_validates_its_options() -> None:
    app = App("producer")
    with pytest.raises(ConfigurationError, match="max_attempts"):
        app.handle("x", schema=Resize, max_attempts=0)


@pytest.mark.anyio
async def test_handle_cannot_be_called_directly() -> None:
    remote = App("producer").handle("images.resize", schema=Resize)
    with anyio.fail_after(5), pytest.raises(ConfigurationError, match=r"app\.handle\(\)"):
        await remote(Resize("u", 1))


@pytest.mark.anyio
async def test_handle_validates_and_enqueues() -> None:
    app = App("producer", backend=MemoryBackend())
    remote = app.handle("images.resize", schema=Resize, queue="images", priority=3)
    with anyio.fail_after(5):
        async with app:
            handle = await remote.enqueue(Resize("u", 64))
            job = await handle.info()
            with pytest.raises(ValidationError, match=r"at `\$\.width`"):
                await remote.enqueue({"url": "u", "width": "wide"})  # type: ignore[arg-type]
    assert handle.created
    assert (job.name, job.queue, job.priority, job.state) == (
        "images.resize",
        "images",
        3,
        JobState.QUEUED,
    )
    assert msgspec.msgpack.decode(job.payload, type=Resize) == Resize("u", 64)


# -- records built by enqueue -----------------------------------------------------------


def test_record_applies_the_job_defaults_and_overrides() -> None:
    app = App("records")
    handler = app.job(schema=Resize, name="r", queue="images", priority=2, timeout=30)(resize_fn)
    job = handler.record(Resize("u", 1), now=1000.0)
    assert (job.queue, job.priority, job.timeout, job.max_attempts) == ("images", 2, 30.0, 3)
    assert (job.state, job.enqueued_at, job.scheduled_at) == (JobState.QUEUED, 1000.0, 1000.0)
    assert (job.result_ttl, job.key, job.attempts) == (86_400.0, None, 0)
    custom = handler.record(
        Resize("u", 1), queue="bulk", priority=-1, timeout=5, max_attempts=1, key="k", now=1000.0
    )
    assert (custom.queue, custom.priority, custom.timeout) == ("bulk", -1, 5)
    assert (custom.max_attempts, custom.key) == (1, "k")


def test_record_schedules_delayed_jobs() -> None:
    app = App("records")
    handler = app.job(schema=Resize, name="r")(resize_fn)
    later = handler.record(Resize("u", 1), delay=dt.timedelta(minutes=1), now=1000.0)
    assert (later.state, later.scheduled_at) == (JobState.SCHEDULED, 1060.0)
    at = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    fixed = handler.record(Resize("u", 1), at=at, now=1000.0)
    assert (fixed.state, fixed.scheduled_at) == (JobState.SCHEDULED, at.timestamp())
    past = handler.record(Resize("u", 1), delay=-5, now=1000.0)
    assert past.state is JobState.QUEUED


def test_record_rejects_a_naive_datetime_and_bad_attempts() -> None:
    app = App("records")
    handler = app.job(schema=Resize, name="r")(resize_fn)
    with pytest.raises(ConfigurationError, match="aware datetime"):
        handler.record(Resize("u", 1), at=dt.datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError, match="max_attempts must be at least 1"):
        handler.record(Resize("u", 1), max_attempts=0)
    with pytest.raises(ValidationError, match="job 'r'"):
        handler.record({"url": 1})  # type: ignore[arg-type]


# -- the one set of enqueue options ------------------------------------------------------

AT = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delay": 5, "at": AT}, "give delay= or at=, not both"),
        ({"at": dt.datetime(2030, 1, 1)}, "at= must be an aware datetime"),
        ({"priority": 1.5}, "priority must be an int, got 1.5"),
        ({"priority": True}, "priority must be an int, got True"),
        ({"max_attempts": 0}, "max_attempts must be at least 1, got 0"),
        ({"max_attempts": 2.0}, "max_attempts must be at least 1, got 2.0"),
        ({"timeout": 0}, "timeout must be positive seconds or None, got 0"),
        ({"timeout": float("nan")}, "timeout must be positive seconds or None, got nan"),
        ({"queue": ""}, "queue must be a non-empty name"),
    ],
)
@pytest.mark.anyio
async def test_every_way_to_enqueue_checks_the_options_alike(
    kwargs: dict[str, Any], match: str
) -> None:
    backend = MemoryBackend()
    app = App("options", backend=backend)
    handler = app.job(schema=Resize, name="r")(resize_fn)
    payload = Resize("u", 1)
    waited = {("job_timeout" if k == "timeout" else k): v for k, v in kwargs.items()}
    calls = [
        lambda: handler.enqueue(payload, **kwargs),
        lambda: handler.enqueue_many([payload], **kwargs),
        lambda: handler.enqueue_and_wait(payload, timeout=1, **waited),
        lambda: app.admin.enqueue("r", {"url": "u", "width": 1}, **kwargs),
        lambda: app.admin.enqueue_json("r", '{"url": "u", "width": 1}', **kwargs),
    ]
    with anyio.fail_after(5):
        for call in calls:
            with pytest.raises(ConfigurationError, match=f"^job 'r': {match}"):
                await call()
        with pytest.raises(ConfigurationError, match=match):
            handler.record(payload, **kwargs)
    assert await backend.list_jobs() == []


@pytest.mark.anyio
async def test_enqueue_many_and_enqueue_and_wait_take_the_options_of_enqueue() -> None:
    app = App("options", backend=MemoryBackend())

    @app.job(schema=Resize, name="r", timeout=30)
    async def deadline(payload: Resize, ctx: JobContext) -> list[Any]:
        info = await app.get_job(ctx.job_id).info()
        return [info.queue, info.priority, info.timeout, info.max_attempts]

    with anyio.fail_after(10):
        async with app:
            many = await deadline.enqueue_many(
                [Resize("a", 1), Resize("b", 2)], at=AT, timeout=5, max_attempts=1, queue="q"
            )
            stored = [await handle.info() for handle in many]
            async with app.worker(concurrency=2, queues=["bulk"], poll_interval=0.05):
                answer = await deadline.enqueue_and_wait(
                    Resize("c", 3),
                    timeout=5,
                    at=dt.datetime.now(dt.UTC),
                    queue="bulk",
                    priority=4,
                    job_timeout=2.5,
                    max_attempts=2,
                )
    assert {(j.state, j.scheduled_at, j.timeout, j.max_attempts, j.queue) for j in stored} == {
        (JobState.SCHEDULED, AT.timestamp(), 5.0, 1, "q")
    }
    # timeout= is the wait; job_timeout= is the job's own deadline.
    assert answer == ["bulk", 4, 2.5, 2]


def test_the_typed_option_sets_are_the_fields_of_enqueue_options() -> None:
    fields = set(EnqueueOptions.__struct_fields__)
    assert EnqueueArgs.__optional_keys__ == fields
    per_item = {"key", "id", "meta", "key_ttl", "debounce", "after", "after_failure"}
    assert EnqueueManyArgs.__optional_keys__ == fields - per_item
    assert EnqueueAndWaitArgs.__optional_keys__ == fields - {"timeout"} | {"job_timeout"}
    assert not EnqueueArgs.__required_keys__


@pytest.mark.anyio
async def test_an_unknown_option_is_a_type_error_naming_the_call() -> None:
    backend = MemoryBackend()
    app = App("options", backend=backend)
    handler = app.job(schema=Resize, name="r")(resize_fn)
    payload = Resize("u", 1)
    bogus: dict[str, Any] = {"bogus": 1, "priority": 2}
    key: dict[str, Any] = {"key": "k"}
    deadline: dict[str, Any] = {"job_timeout": 1}
    calls = [
        ("Handler.enqueue", "bogus", lambda: handler.enqueue(payload, **bogus)),
        ("Handler.enqueue_many", "bogus", lambda: handler.enqueue_many([payload], **bogus)),
        ("Handler.enqueue_and_wait", "bogus", lambda: handler.enqueue_and_wait(payload, **bogus)),
        ("Handler.enqueue_many", "key", lambda: handler.enqueue_many([payload], **key)),
        ("Handler.enqueue", "job_timeout", lambda: handler.enqueue(payload, **deadline)),
        (
            "Handler.enqueue",
            "bogus",
            lambda: app.admin.enqueue("r", {"url": "u", "width": 1}, **bogus),
        ),
    ]
    with anyio.fail_after(5):
        for call, option, enqueue in calls:
            expected = rf"^{call}\(\) got an unexpected keyword argument '{option}'$"
            with pytest.raises(TypeError, match=expected):
                await enqueue()
    with pytest.raises(TypeError, match=r"^Handler.record\(\) got an unexpected keyword"):
        handler.record(payload, **bogus)
    assert await backend.list_jobs() == []


@pytest.mark.anyio
async def test_named_options_reach_the_record() -> None:
    backend = MemoryBackend()
    app = App("options", backend=backend)
    handler = app.job(schema=Resize, name="r", timeout=30)(resize_fn)
    urgent: EnqueueArgs = {"priority": 7, "queue": "fast", "timeout": 2.0, "key": "k"}
    bulk: EnqueueManyArgs = {"at": AT, "max_attempts": 1}
    with anyio.fail_after(5):
        one = await (await handler.enqueue(Resize("u", 1), **urgent)).info()
        (many,) = [await h.info() for h in await handler.enqueue_many([Resize("v", 2)], **bulk)]
    assert (one.priority, one.queue, one.timeout, one.key) == (7, "fast", 2.0, "k")
    assert (many.scheduled_at, many.max_attempts, many.timeout) == (AT.timestamp(), 1, 30.0)
    # None is "the job's own", as an unset option is (what the CLI passes for a flag not given).
    unset: EnqueueArgs = {"priority": None, "queue": None, "timeout": None, "key": None}
    record = handler.record(Resize("w", 3), now=100.0, **unset)
    assert (record.priority, record.queue, record.timeout, record.key) == (0, "default", 30.0, None)


def test_a_plain_enqueue_builds_no_options() -> None:
    assert EnqueueOptions.of({}, "r") is NO_OPTIONS
    built = EnqueueOptions.of({"priority": 3}, "r")
    assert built == EnqueueOptions(priority=3)


# -- enqueue_and_wait on a backend that prepares for the wait --------------------------


class WaitedMemory(MemoryBackend):
    """A memory backend that offers ``EnqueuesWaited``, recording what came through it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[str] = []

    async def enqueue_waited(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        self.waited += [job.id for job in jobs]
        return await self.enqueue(jobs)


class Recorder(Instrumentation):
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def enqueue(self, jobs: Sequence[JobRecord], call_next: EnqueueNext) -> list[JobRecord]:
        self.sent += [job.id for job in jobs]
        return await call_next(jobs)


@pytest.mark.anyio
async def test_enqueue_and_wait_tells_the_backend_it_will_wait() -> None:
    backend = WaitedMemory()
    hook = Recorder()
    app = App("waited", backend=backend, instrumentation=[hook])

    @app.job(schema=Resize, name="resize")
    async def resize(payload: Resize) -> int:
        return payload.width * 2

    with anyio.fail_after(10):
        async with app, app.worker(concurrency=2):
            assert await resize.enqueue_and_wait(Resize("a", 2), timeout=5) == 4
            handle = await resize.enqueue(Resize("b", 3))
            assert await handle.result(timeout=5) == 6
    # Only the waited-for job went through enqueue_waited; the hook saw both.
    assert len(hook.sent) == 2
    assert backend.waited == hook.sent[:1]


# -- caller-chosen ids --------------------------------------------------------------


class Receipt(msgspec.Struct):
    url: str
    width: int


@pytest.mark.anyio
async def test_enqueue_with_an_id_stores_it_once() -> None:
    app = App("ids", backend=MemoryBackend())
    resize = app.job(schema=Resize, name="resize")(resize_fn)
    with anyio.fail_after(5):
        async with app:
            first = await resize.enqueue(Resize("a", 1), id="order-42")
            again = await resize.enqueue(Resize("b", 2), id="order-42", priority=9)
            other = await resize.enqueue(Resize("c", 3))
            job = await again.info()
    assert (first.id, first.created) == ("order-42", True)
    assert (again.id, again.created) == ("order-42", False)
    assert other.created
    assert other.id != "order-42"
    assert msgspec.msgpack.decode(job.payload, type=Resize) == Resize("a", 1)
    assert job.priority == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("job_id", "problem"),
    [("", "non-empty"), ("x" * 401, "limit is 400"), ("a\nb", "control character"), (7, "str")],
)
async def test_enqueue_refuses_a_bad_id(job_id: object, problem: str) -> None:
    backend = MemoryBackend()
    app = App("ids", backend=backend)
    resize = app.job(schema=Resize, name="resize")(resize_fn)
    with anyio.fail_after(5):
        async with app:
            with pytest.raises(ConfigurationError, match=rf"job 'resize': id .*{problem}"):
                await resize.enqueue(Resize("a", 1), id=job_id)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match=problem):
                await resize.enqueue_many([(Resize("a", 1), {"id": job_id})])  # type: ignore[typeddict-item]
            assert await backend.list_jobs() == []


@pytest.mark.anyio
async def test_enqueue_many_takes_ids_and_keys_per_item() -> None:
    backend = MemoryBackend()
    app = App("ids", backend=backend)
    resize = app.job(schema=Resize, name="resize")(resize_fn)
    with anyio.fail_after(5):
        async with app:
            await resize.enqueue(Resize("old", 0), id="taken")
            handles = await resize.enqueue_many(
                [
                    Resize("plain", 1),
                    (Resize("a", 2), {"id": "a", "key": "k"}),
                    (Resize("b", 3), {"key": "k"}),
                    (Resize("c", 4), {"id": "taken"}),
                    (Resize("d", 5), {"id": "a"}),
                    (Resize("e", 6), {}),
                ],
                priority=4,
            )
            stored = [await h.info() for h in handles]
            with pytest.raises(TypeError, match="'queue'"):
                await resize.enqueue_many([(Resize("x", 1), {"queue": "q"})])  # type: ignore[typeddict-unknown-key]
            with pytest.raises(TypeError, match="'id'"):
                await resize.enqueue_many([Resize("x", 1)], id="x")  # type: ignore[call-arg]
    assert [h.created for h in handles] == [True, True, False, False, False, True]
    assert [h.id for h in handles][1:5] == ["a", "a", "taken", "a"]
    widths = [msgspec.msgpack.decode(j.payload, type=Resize).width for j in stored]
    assert widths == [1, 2, 2, 0, 2, 6]
    assert stored[0].priority == stored[1].priority == 4
    assert len(await backend.list_jobs()) == 4


@pytest.mark.anyio
async def test_enqueue_and_wait_on_a_completed_id_returns_the_stored_result() -> None:
    app = App("ids", backend=MemoryBackend())
    calls: list[int] = []

    @app.job(schema=Resize, name="resize")
    async def resize(payload: Resize) -> Receipt:
        calls.append(payload.width)
        return Receipt(payload.url, payload.width)

    with anyio.fail_after(10):
        async with app:
            async with app.worker(concurrency=1):
                first = await resize.enqueue_and_wait(Resize("a", 1), id="r-1", timeout=5)
            again = await resize.enqueue_and_wait(Resize("b", 2), id="r-1", timeout=5)
    assert first == again == Receipt("a", 1)
    assert calls == [1]


@pytest.mark.anyio
async def test_handler_get_job_decodes_the_result_type() -> None:
    app = App("ids", backend=MemoryBackend())

    @app.job(schema=Resize, name="resize")
    async def resize(payload: Resize) -> Receipt:
        return Receipt(payload.url, payload.width)

    with anyio.fail_after(10):
        async with app:
            async with app.worker(concurrency=1):
                await resize.enqueue_and_wait(Resize("a", 1), id="r-1", timeout=5)
            typed = await resize.get_job("r-1").result(timeout=5)
            loose = await app.get_job("r-1").result(timeout=5)
    assert typed == Receipt("a", 1)
    assert loose == {"url": "a", "width": 1}
