"""Blocking calls for code without an event loop: Django and Flask views, scripts, commands.

::

    from myapp.jobs import app, charge

    handle = app.sync.enqueue(charge, Charge("o-1", 500))      # SyncJob[Receipt]
    receipt = app.sync.enqueue_and_wait(charge, Charge("o-2", 100), timeout=5)
    handle.info().state, handle.result(timeout=5), handle.cancel()

Each call runs the async API on a background event loop that the app owns:
a daemon thread, started on first use, stopped at exit (or by
``app.sync.close()``), started again on the next call, and again in a forked
child. Any number of threads may call at once; the loop has its own
connections to the store (see ``asyncq._loops``), so the same app keeps
working in async code too. Calling from inside a running event loop is
refused: it would block that loop; await the async API there instead.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._app import App
    from ._handler import Handler, JobHandle
    from ._options import EnqueueAndWaitArgs, EnqueueArgs, EnqueueManyArgs, ItemArgs
    from ._records import JobRecord

__all__ = ["SyncApp", "SyncJob"]

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")


class SyncJob(Generic[R]):
    """A blocking ``JobHandle``: the same job, read and cancelled without ``await``."""

    def __init__(self, runner: SyncApp, handle: JobHandle[R]) -> None:
        self._runner = runner
        #: the async handle, for code that has a loop
        self.handle = handle
        self.id = handle.id
        #: False when an ``id`` or ``key`` named a job already stored
        self.created = handle.created

    def __repr__(self) -> str:
        return f"SyncJob(id={self.id!r}, created={self.created})"

    def info(self) -> JobRecord:
        """The job as stored now (``JobHandle.info``). Raises ``JobNotFound``."""
        return self._runner.call(self.handle.info)

    def result(self, timeout: float | None = None) -> R:
        """Block until the job finishes; its result (``JobHandle.result``).

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
            JobFailed: it ended dead; ``JobCancelled``: it was cancelled.
            JobNotFound: no such job.
        """
        return self._runner.call(self.handle.result, timeout)

    def cancel(self) -> JobRecord:
        """Cancel the job (``JobHandle.cancel``). Raises ``JobNotFound``."""
        return self._runner.call(self.handle.cancel)

    def remove(self) -> bool:
        """Delete the job unless it is running (``JobHandle.remove``). Raises ``JobActive``."""
        return self._runner.call(self.handle.remove)


class SyncApp:
    """``app.sync``: the producer API of an app, blocking, safe from any thread.

    The methods mirror the async ones, taking the handler first: ``enqueue``,
    ``enqueue_many``, ``enqueue_and_wait``, ``get_job``; a ``SyncJob`` reads,
    waits for and cancels a job. Errors are the async API's.
    """

    def __init__(self, app: App) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._context: AbstractContextManager[BlockingPortal] | None = None
        self._pid = 0
        self._at_exit: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"SyncApp({self._app.name!r}, running={self.running})"

    @property
    def running(self) -> bool:
        """Whether the background loop runs (in this process)."""
        return self._portal is not None and self._pid == os.getpid()

    # -- the producer API ------------------------------------------------------------

    def enqueue(
        self,
        handler: Handler[T, R],
        payload: T,
        /,
        *,
        connection: object | None = None,
        **options: Unpack[EnqueueArgs],
    ) -> SyncJob[R]:
        """``handler.enqueue(payload, **options)``, blocking; see ``Handler.enqueue``.

        ``connection``: a sync ``psycopg.Connection`` (PostgreSQL), to store the
        job inside its open transaction (Django: ``django.db.connection.connection``
        in ``transaction.atomic()``): the job exists if and only if it commits.
        Its statements run in a worker thread while this call blocks.
        """

        async def call() -> JobHandle[R]:
            return await handler.enqueue(payload, connection=connection, **options)

        return SyncJob(self, self.call(call))

    def enqueue_many(
        self,
        handler: Handler[T, R],
        payloads: Iterable[T | tuple[T, ItemArgs]],
        /,
        *,
        connection: object | None = None,
        **options: Unpack[EnqueueManyArgs],
    ) -> list[SyncJob[R]]:
        """``handler.enqueue_many(payloads, **options)``, blocking: one round trip.

        ``connection``: as for ``enqueue``, the whole batch inside its transaction.
        """
        items = list(payloads)

        async def call() -> list[JobHandle[R]]:
            return await handler.enqueue_many(items, connection=connection, **options)

        return [SyncJob(self, handle) for handle in self.call(call)]

    def enqueue_and_wait(
        self,
        handler: Handler[T, R],
        payload: T,
        /,
        *,
        timeout: float | None = None,
        **options: Unpack[EnqueueAndWaitArgs],
    ) -> R:
        """``handler.enqueue_and_wait(payload, timeout=..., **options)``, blocking.

        Raises:
            TimeoutError: no result within ``timeout``; the job may still run.
            JobFailed: the job ended dead or cancelled.
        """

        async def call() -> R:
            return await handler.enqueue_and_wait(payload, timeout=timeout, **options)

        return self.call(call)

    def get_job(self, job_id: str, handler: Handler[Any, R] | None = None) -> SyncJob[R]:
        """A blocking handle for a stored id; with ``handler``, its result is typed ``R``."""
        handle = self._app.get_job(job_id) if handler is None else handler.get_job(job_id)
        return SyncJob(self, handle)

    # -- the loop --------------------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[V]], *args: Any) -> V:
        """Run ``await fn(*args)`` on the app's background loop and return what it returns.

        Raises:
            ConfigurationError: called from a running event loop (await ``fn`` there).
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            msg = (
                f"app {self._app.name!r}: app.sync blocks, and this thread runs an event "
                "loop: await the async API here (handler.enqueue, handle.result, ...)"
            )
            raise ConfigurationError(msg)
        return self._started().call(fn, *args)

    def _started(self) -> BlockingPortal:
        portal = self._portal
        if portal is not None and self._pid == os.getpid():
            return portal
        with self._lock:
            if self._portal is None or self._pid != os.getpid():
                # A forked child inherits no thread: it starts a loop of its own.
                self._context = start_blocking_portal(
                    "asyncio", name=f"asyncq-sync-{self._app.name}"
                )
                self._portal = self._context.__enter__()
                self._pid = os.getpid()
                if self._at_exit is None:
                    self._at_exit = _closer(weakref.ref(self))
                    atexit.register(self._at_exit)
            return self._portal

    def close(self) -> None:
        """Stop the background loop, closing its connections; the next call starts it again."""
        with self._lock:
            context, self._context, self._portal = self._context, None, None
            mine = self._pid == os.getpid()
        if context is not None and mine:
            context.__exit__(None, None, None)


def _closer(ref: weakref.ref[SyncApp]) -> Callable[[], None]:
    def close() -> None:
        runner = ref()
        if runner is not None:
            runner.close()

    return close
