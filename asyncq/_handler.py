"""Handler[T, R]: a registered job, typed by its payload and its result; JobHandle[R]."""

from __future__ import annotations

import inspect
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

import anyio
import anyio.to_thread
import msgspec
from msgspec.structs import replace

from ._child import Target
from ._codec import Codec
from ._context import JobContext, _current
from ._events import JobEvent
from ._instrumentation import request_ended, request_started
from ._limits import Circuit, Limit
from ._offload import ThreadJobContext, target_of
from ._options import (
    NO_OPTIONS,
    EnqueueAndWaitArgs,
    EnqueueArgs,
    EnqueueManyArgs,
    EnqueueOptions,
    ItemArgs,
)
from ._pydantic import codec_for
from ._records import JobRecord, JobState, new_job_id
from ._retry import RetryPolicy, seconds
from ._subscribe import job_history
from .backends.base import stored_as_given
from .exceptions import (
    BackendError,
    ConfigurationError,
    JobActive,
    JobCancelled,
    JobFailed,
    JobNotFound,
)

if TYPE_CHECKING:
    from ._app import App

__all__ = ["Handler", "JobHandle", "JobOptions"]

T = TypeVar("T")
R = TypeVar("R")


_DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class JobOptions:
    """A job's defaults, set on ``@app.job``; ``enqueue`` may override them per job.

    Attributes:
        queue: where jobs go; workers choose queues.
        timeout: seconds an attempt may run; ``None`` for no limit.
        max_attempts: attempts before the job is dead (1 means no retry).
        retry: delays between attempts, and which exceptions are retried.
        priority: larger runs first; may be negative.
        result_ttl: seconds a completed job (its result, its key) is kept; ``None`` for ever.
        limits: the limits its jobs pass before they start (``App.limit``).
        circuit: the circuit breaker its jobs run behind (``App.circuit``).
    """

    queue: str = "default"
    timeout: float | None = None
    max_attempts: int = 3
    retry: RetryPolicy = _DEFAULT_RETRY
    priority: int = 0
    result_ttl: float | None = 86_400.0
    #: the limits a job passes before it starts (``app.limit``)
    limits: tuple[Limit, ...] = ()
    #: the circuit breaker its jobs run behind (``app.circuit``)
    circuit: Circuit | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = f"max_attempts must be at least 1, got {self.max_attempts}"
            raise ConfigurationError(msg)
        if self.timeout is not None and self.timeout <= 0:
            msg = f"timeout must be positive seconds or None, got {self.timeout}"
            raise ConfigurationError(msg)
        if not self.queue:
            msg = "queue must be a non-empty name"
            raise ConfigurationError(msg)


class Handler(Generic[T, R]):
    """A job: its name, its payload schema ``T``, its function returning ``R``, and its options.

    Made by ``@app.job(schema=T)`` (or ``app.handle(...)`` for a producer that
    only knows the name). Enqueue with ``await handler.enqueue(payload)``;
    call the function directly with ``await handler(payload)`` in unit tests.
    """

    def __init__(
        self,
        app: App,
        name: str,
        schema: type[T],
        fn: Callable[..., Any] | None,
        options: JobOptions,
        *,
        result_type: Any = Any,
        process: bool = False,
    ) -> None:
        self.app = app
        self.name = name
        self.schema = schema
        self.fn = fn
        self.options = options
        self.payload_codec: Codec[T] = codec_for(schema, name)
        self.result_codec: Codec[R] = codec_for(result_type, name)
        self.takes_context = fn is not None and _takes_context(fn, name)
        #: a plain ``def``: it runs in a thread of the worker's pool
        self.sync = fn is not None and not inspect.iscoroutinefunction(fn)
        #: it runs in a child process of the worker's pool (``process=True``)
        self.process = process
        #: where a child process imports it from (process handlers only)
        self.target: Target | None = None
        if process and fn is not None:
            self.target = target_of(fn, name)

    def __repr__(self) -> str:
        return f"Handler(name={self.name!r}, queue={self.options.queue!r})"

    async def __call__(self, payload: T, ctx: JobContext | None = None) -> R:
        """Run the function in this process, now, with no queue involved (for tests).

        A sync function runs in a thread; a process handler runs here, not in a child.
        """
        if self.fn is None:
            msg = f"job {self.name!r} has no function here: it was declared with app.handle()"
            raise ConfigurationError(msg)
        if ctx is None:
            record = JobRecord(
                id=new_job_id(),
                name=self.name,
                queue=self.options.queue,
                payload=b"",
                attempts=1,
                max_attempts=self.options.max_attempts,
            )
            ctx = ThreadJobContext(record) if self.sync else JobContext(record)
        args = (payload, ctx) if self.takes_context else (payload,)
        if self.sync:  # in a thread, as a worker runs it (so ctx.from_thread works)
            return typing.cast("R", await anyio.to_thread.run_sync(_called, self.fn, args, ctx))
        reset = _current.set(ctx)
        try:
            result: R = await self.fn(*args)
            return result
        finally:
            _current.reset(reset)

    def record(
        self, payload: T, *, now: float | None = None, **options: Unpack[EnqueueArgs]
    ) -> JobRecord:
        """Validate ``payload`` and build the record ``enqueue`` would store.

        Keyword options: see ``EnqueueArgs``; ``now`` is the enqueue time
        (default: the clock).

        Raises:
            ValidationError: the payload does not match the schema, or is over a limit.
            ConfigurationError: an option is invalid.
        """
        checked = EnqueueOptions.of(options, self.name, "Handler.record")
        return self._record(payload, checked, time.time() if now is None else now)

    def _record(self, payload: T, options: EnqueueOptions, now: float) -> JobRecord:
        """The record of one job: ``options`` over the job's defaults, enqueued at ``now``."""
        defaults = self.options
        queue = defaults.queue if options.queue is None else options.queue
        data = self.payload_codec.encode(payload, queue=queue, max_bytes=self.app.max_payload_bytes)
        scheduled_at = now
        if options.at is not None:
            scheduled_at = options.at.timestamp()
        elif options.delay is not None:
            scheduled_at = now + seconds(options.delay)
        elif options.debounce is not None:
            scheduled_at = now + options.debounce
        record = JobRecord(
            id=new_job_id() if options.id is None else options.id,
            name=self.name,
            queue=queue,
            payload=data,
            state=JobState.SCHEDULED if scheduled_at > now else JobState.QUEUED,
            priority=defaults.priority if options.priority is None else options.priority,
            max_attempts=(
                defaults.max_attempts if options.max_attempts is None else options.max_attempts
            ),
            timeout=defaults.timeout if options.timeout is None else options.timeout,
            key=options.key,
            result_ttl=defaults.result_ttl,
            enqueued_at=now,
            scheduled_at=scheduled_at,
        )
        if defaults.limits:
            record = replace(
                record, limits=tuple(limit.gate(payload, self.name) for limit in defaults.limits)
            )
        if defaults.circuit is not None:
            record = replace(record, circuit=defaults.circuit.breaker)
        if options.key_ttl is not None or options.debounce is not None:
            record = _with_key_options(record, options)
        if options.meta is None and options.after is None and options.after_failure is None:
            return record
        extra: dict[str, Any] = {}
        if options.meta is not None:
            extra["meta"] = dict(options.meta)
        if options.after:
            extra["parents"] = options.after
        if options.after_failure is not None:
            extra["after_failure"] = options.after_failure
        return replace(record, **extra)

    async def enqueue(
        self, payload: T, /, *, connection: object | None = None, **options: Unpack[EnqueueArgs]
    ) -> JobHandle[R]:
        """Validate and store one job; return its handle.

        Keyword options: see ``EnqueueArgs`` (each overrides the job's own).
        With an ``id`` already stored (in any state), or a ``key`` whose job
        is pending, running or completed within its result TTL (or finished
        within its ``key_ttl``), the existing job's handle comes back and
        nothing is stored (``handle.created`` is False). With ``debounce``, a
        pending job holding the key takes this payload instead, and its
        handle comes back.

        Args:
            payload: the job's input, checked against the schema.
            connection: write through this driver connection, inside the
                caller's transaction (PostgreSQL).
            **options: see ``EnqueueArgs``.

        Raises:
            ValidationError: the payload does not match the schema, or is over
                a limit (``App(max_payload_bytes=...)``, nesting); nothing stored.
            ConfigurationError: an option is invalid; nothing stored.
            BackendError: the store could not take the job.
        """
        # Tested here, not only in EnqueueOptions.of: a plain enqueue(payload) makes no call.
        checked = EnqueueOptions.of(options, self.name) if options else NO_OPTIONS
        job = self._record(payload, checked, time.time())
        return await self._store(job, connection=connection)

    async def _store(
        self, job: JobRecord, *, connection: object | None = None, waited: bool = False
    ) -> JobHandle[R]:
        """Store one built record; its handle (``waited``: see ``App.enqueue_records``)."""
        (stored,) = await self.app.enqueue_records([job], connection=connection, waited=waited)
        return JobHandle(
            self.app, stored.id, self.result_codec, created=stored_as_given(job, stored)
        )

    def get_job(self, job_id: str) -> JobHandle[R]:
        """A handle for a stored job of this handler, whose result decodes to ``R``.

        Like ``app.get_job``, it reads nothing: a wrong id shows when the
        handle is used (``JobNotFound``).
        """
        return JobHandle(self.app, job_id, self.result_codec)

    async def enqueue_many(
        self,
        payloads: Iterable[T | tuple[T, ItemArgs]],
        /,
        *,
        connection: object | None = None,
        **options: Unpack[EnqueueManyArgs],
    ) -> list[JobHandle[R]]:
        """Validate every payload, then store them all in one backend call.

        Keyword options: see ``EnqueueManyArgs``; they apply to every job.
        What belongs to one job, its ``id``, ``key`` (and ``key_ttl`` or
        ``debounce``) and ``meta``, goes with its payload: an item is a
        payload, or a ``(payload, ItemArgs)`` pair::

            await resize.enqueue_many([
                Image(url="a.png"),
                (Image(url="b.png"), {"id": "img-b", "key": "b.png", "meta": {"tenant": "acme"}}),
            ])

        (A payload that is itself a 2-tuple ending in a dict is given as
        ``(payload, {})``.) Handles come back in order; an item whose id or key
        was taken, also by an earlier item of the batch, has ``created``
        False. If any item is invalid, nothing is stored.

        Raises:
            ValidationError: a payload does not match the schema (the message names it).
            ConfigurationError: an option, an id or a key is invalid; nothing stored.
        """
        for named in _ITEM_OPTIONS:
            if named in options:  # typed callers cannot; the same error for the others
                msg = f"Handler.enqueue_many() got an unexpected keyword argument {named!r}"
                raise TypeError(msg)
        checked = EnqueueOptions.of(options, self.name, "Handler.enqueue_many")
        now = time.time()
        jobs: list[JobRecord] = []
        named_items = False
        for item in payloads:
            if type(item) is tuple and len(item) == 2 and isinstance(item[1], dict):
                payload, item_args = item
                jobs.append(self._record(payload, self._item_options(options, item_args), now))
                named_items = True
            else:
                jobs.append(self._record(typing.cast("T", item), checked, now))
        stored = await self.app.enqueue_records(jobs, connection=connection, fresh=not named_items)
        app, codec = self.app, self.result_codec
        handles = [
            JobHandle(app, s.id, codec, created=stored_as_given(j, s))
            for s, j in zip(stored, jobs, strict=True)
        ]
        if named_items:
            # The same id twice: the store answers the later one with the
            # earlier one, as stored, so only its first handle was created.
            seen: set[str] = set()
            for handle in handles:
                if handle.id in seen:
                    handle.created = False
                seen.add(handle.id)
        return handles

    def _item_options(self, options: EnqueueManyArgs, item_args: ItemArgs) -> EnqueueOptions:
        """The checked options of one ``(payload, ItemArgs)`` item of ``enqueue_many``."""
        unknown = sorted(item_args.keys() - _ITEM_OPTIONS)
        if unknown:
            msg = f"Handler.enqueue_many() item options got an unexpected key {unknown[0]!r}"
            raise TypeError(msg)
        return EnqueueOptions.of({**options, **item_args}, self.name, "Handler.enqueue_many")

    async def enqueue_and_wait(
        self, payload: T, /, *, timeout: float | None = None, **options: Unpack[EnqueueAndWaitArgs]
    ) -> R:
        """Enqueue, then wait for the result (request/response).

        The wait is woken by the store's push, not by polling. With an ``id``
        or a ``key`` whose job already completed, the stored result comes
        back at once.

        Args:
            payload: the job's input, checked against the schema.
            timeout: seconds the caller waits for the whole round trip; ``None``
                waits for ever. It is not the job's deadline: that is
                ``job_timeout`` (see ``EnqueueAndWaitArgs``).
            **options: see ``EnqueueAndWaitArgs``.

        Raises:
            TimeoutError: no result within ``timeout``; the job may still run.
            JobFailed: the job ended dead or cancelled (``JobCancelled``).
            ValidationError: the payload does not match the schema.
            ConfigurationError: an option is invalid; nothing stored.
        """
        fields: Mapping[str, Any] = options
        if "job_timeout" in options:  # the job's deadline: EnqueueOptions.timeout
            fields = {k if k != "job_timeout" else "timeout": v for k, v in options.items()}
        checked = EnqueueOptions.of(fields, self.name, "Handler.enqueue_and_wait")
        hooks = self.app.instrumentation
        # Hooks see the whole round trip, so the enqueue and the job nest under its span.
        queue = self.options.queue if checked.queue is None else checked.queue
        ends = request_started(hooks, self.name, queue) if hooks else ()
        job_id: str | None = None
        try:
            with anyio.fail_after(timeout) as scope:
                job = self._record(payload, checked, time.time())
                handle = await self._store(job, waited=True)
                job_id = handle.id
                result = await handle.result()
        except BaseException as exc:
            error = exc
            if isinstance(exc, TimeoutError) and scope.cancelled_caught:
                error = TimeoutError(_no_result(self.name, queue, job_id, timeout))
            if ends:
                request_ended(ends, job_id, error)
            if error is exc:
                raise
            raise error from None
        if ends:
            request_ended(ends, job_id, None)
        return result


#: The options of one item of ``enqueue_many`` (``ItemArgs``), which it refuses for the batch.
_ITEM_OPTIONS = frozenset(ItemArgs.__annotations__)


def _with_key_options(record: JobRecord, options: EnqueueOptions) -> JobRecord:
    """``record`` with its ``key_ttl`` or ``debounce``; a result kept at least as long as a key."""
    ttl = record.result_ttl
    if options.key_ttl is not None and ttl is not None:
        ttl = max(ttl, options.key_ttl)
    return replace(record, key_ttl=options.key_ttl, debounce=options.debounce, result_ttl=ttl)


def _no_result(
    name: str | None, queue: str | None, job_id: str | None, timeout: float | None
) -> str:
    """What a caller whose wait for a result ran out is told: the job, and how to find it."""
    job = f"job {name!r}" if name is not None else "job"
    if job_id is not None:
        job += f" {job_id}"
    if queue is not None:
        job += f" (queue {queue!r})"
    msg = f"no result for {job} within {timeout}s: "
    if job_id is None:
        return msg + "it was not stored"
    return (
        msg + "it may still run (is a worker running for its queue?); look it up with "
        f"app.get_job({job_id!r}) or `asyncq job MODULE:APP {job_id}`"
    )


class JobHandle(Generic[R]):
    """A reference to a stored job, typed by its result.

    Attributes:
        id: the job's id; ``app.get_job(id)`` rebuilds a handle in any process.
        created: False when ``enqueue`` found an existing job with the same
            id or key, and stored nothing.
    """

    __slots__ = ("_app", "_codec", "created", "id")

    def __init__(self, app: App, job_id: str, codec: Codec[R], *, created: bool = True) -> None:
        self._app = app
        self._codec = codec
        self.id = job_id
        self.created = created

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, created={self.created})"

    async def info(self) -> JobRecord:
        """The job as stored now: state, attempts, timestamps, errors, progress.

        Raises:
            JobNotFound: no such job (or purged).
        """
        job = await (await self._app.backend_opened()).get(self.id)
        if job is None:
            raise JobNotFound(self.id)
        return job

    async def history(self) -> list[JobEvent]:
        """What happened to the job, in order: its events the store still keeps.

        Empty when the store writes no events (``App(events=False)``), or has
        pruned them (``Retention.events``); a removed job keeps its history
        until then.
        """
        return await job_history(await self._app.backend_opened(), self.id)

    async def result(self, timeout: float | None = None) -> R:
        """Wait until the job finishes and return its result.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
            JobFailed: it ended dead; ``JobCancelled``: it was cancelled.
            JobNotFound: no such job, or it was removed (or purged) while waiting.
        """
        backend = await self._app.backend_opened()
        try:
            with anyio.fail_after(timeout) as scope:
                job = await backend.wait_finished(self.id)
        except TimeoutError:
            if not scope.cancelled_caught:
                raise
            raise TimeoutError(_no_result(None, None, self.id, timeout)) from None
        if job is None:
            raise JobNotFound(self.id)
        if job.state is JobState.COMPLETED:
            return self._codec.decode(job.result or b"\xc0")
        if job.state is JobState.CANCELLED:
            raise JobCancelled(job)
        if job.state is JobState.DEAD:
            raise JobFailed(job)
        # wait_finished returns an unfinished job only when the backend is closing
        msg = f"stopped waiting for job {job.name!r} ({job.id}): the backend was closed"
        raise BackendError(msg)

    async def cancel(self) -> JobRecord:
        """Cancel the job: a pending one never runs; a running one is cancelled in its worker.

        Returns the job after the request (``cancel_requested`` set if it is running).

        Raises:
            JobNotFound: no such job.
        """
        job = await (await self._app.backend_opened()).cancel(self.id, by="api")
        if job is None:
            raise JobNotFound(self.id)
        return job

    async def remove(self) -> bool:
        """Delete the job, in any state but running; ``False`` if there was no such job.

        Its id and key are free again at once, and whoever waits for its
        result gets ``JobNotFound``.

        Raises:
            JobActive: the job is running; cancel it first (``cancel()``), then remove it.
        """
        backend = await self._app.backend_opened()
        (state,) = await backend.remove([self.id])
        if state is JobState.ACTIVE:
            job = await backend.get(self.id)
            raise JobActive(self.id, *((job.name, job.queue) if job else ()))
        return state is not None


def _called(fn: Callable[..., Any], args: tuple[Any, ...], ctx: JobContext) -> Any:
    """``fn(*args)`` in a thread, with ``ctx`` as its ``current_job()``."""
    reset = _current.set(ctx)
    try:
        return fn(*args)
    finally:
        _current.reset(reset)


def _takes_context(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` is ``(payload)`` or ``(payload, ctx)``; anything else is an error."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) or not callable(fn):
        msg = (
            f"job {name!r}: the handler must be a function (async def, or def to run "
            "in a thread), not a generator"
        )
        raise ConfigurationError(msg)
    all_params = inspect.signature(fn).parameters.values()
    required_kw = [p.name for p in all_params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw:
        msg = (
            f"job {name!r}: the handler must take (payload) or (payload, ctx) positionally; "
            f"required keyword-only parameters are not supported: {', '.join(required_kw)}"
        )
        raise ConfigurationError(msg)
    params = [p for p in all_params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) not in (1, 2):
        msg = (
            f"job {name!r}: the handler must take (payload) or (payload, ctx), "
            f"not {len(params)} positional parameters"
        )
        raise ConfigurationError(msg)
    return len(params) == 2


def return_type(fn: Callable[..., Any]) -> Any:
    """The handler's declared return type, for decoding results; ``Any`` when unknown."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations only cost us typed results
        return Any
    hint = hints.get("return", Any)
    try:
        msgspec.msgpack.Decoder(hint)
    except TypeError:
        return Any
    return hint
