"""Handlers off the event loop: sync functions in a pool of threads, process handlers in children.

- A plain ``def`` handler runs in a thread of a bounded pool (``threads``,
  an ``anyio.CapacityLimiter``). A thread cannot be interrupted: when its
  attempt ends first (a deadline, a cancel, a shutdown), the attempt is
  settled as usual, ``ctx.cancelled`` turns true, the thread is *abandoned*
  (its result discarded), a warning names the job and the queue, and
  ``Threads.abandoned_running`` counts it until it returns. An abandoned
  thread gives its slot of the pool back at once, so the pool keeps running
  other jobs; it keeps its OS thread, and whatever the function holds, until
  the function returns.
- A ``process=True`` handler runs in a child process of a pool the worker
  owns (``processes``, one job at a time each). They start with the worker
  when its app has process handlers, and import those handlers at once, so a
  job's deadline does not pay for a child's start. A child imports a handler
  by name and exchanges msgspec frames with the worker (``_child``). At a
  deadline, on a cancel or when the shutdown timeout ends, the child is
  killed and a replacement started; one that dies is replaced too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from ._child import Call, Done, Failed, Init, Progress, Target, frame, frame_length
from ._child import from_child_decoder as _decode
from ._context import JobContext, _current
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from anyio.abc import Process

    from ._handler import Handler
    from ._records import JobRecord
    from ._worker_types import ServiceContext

__all__ = [
    "DEFAULT_THREADS",
    "ChildFailure",
    "Encoded",
    "Offload",
    "Processes",
    "ThreadJobContext",
    "Threads",
    "default_processes",
    "target_of",
]

log = logging.getLogger("asyncq.worker")

#: Threads for sync handlers when the worker is not told (as ``concurrent.futures``).
DEFAULT_THREADS = min(32, (os.cpu_count() or 1) + 4)


def default_processes() -> int:
    """Child processes for process handlers when the worker is not told: one per CPU."""
    return os.cpu_count() or 1


class ThreadJobContext(JobContext):
    """The context of a sync handler: ``cancelled`` turns true when its attempt is stopped."""

    __slots__ = ("_stopped",)

    def __init__(self, job: JobRecord, **kwargs: Any) -> None:
        super().__init__(job, **kwargs)
        self._stopped = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._stopped.is_set()


# -- threads -----------------------------------------------------------------------


class _Call:
    """One sync handler call, and whether its thread started, returned, or was abandoned."""

    __slots__ = ("abandoned", "args", "ctx", "finished", "fn", "started", "threads")

    def __init__(
        self, threads: Threads, fn: Callable[..., Any], args: tuple[Any, ...], ctx: JobContext
    ) -> None:
        self.threads = threads
        self.fn = fn
        self.args = args
        self.ctx = ctx
        self.started = self.finished = self.abandoned = False

    def run(self) -> Any:
        threads = self.threads
        with threads.lock:
            stopped = self.abandoned  # stopped before the thread picked it up
            self.started = not stopped
        if stopped:
            return None
        reset = _current.set(self.ctx)
        try:
            return self.fn(*self.args)
        finally:
            _current.reset(reset)
            with threads.lock:
                self.finished = True
                abandoned = self.abandoned
                if abandoned:
                    threads.abandoned_running -= 1
            if abandoned:
                job = self.ctx
                log.warning(
                    "job %r (id %s, queue %r): its abandoned thread returned; result discarded",
                    job.name,
                    job.job_id,
                    job.queue,
                )


class Threads:
    """The pool of threads that runs sync handlers.

    Attributes:
        size: threads running handlers at once, at most.
        abandoned: threads abandoned since the worker started (their attempt
            ended first: a timeout, a cancel, a shutdown).
        abandoned_running: abandoned threads that have not returned yet.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"threads must be at least 1, got {size}"
            raise ConfigurationError(msg)
        self.size = size
        self.abandoned = 0
        self.abandoned_running = 0
        self.lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[..., Any], args: tuple[Any, ...], ctx: JobContext) -> Any:
        """Run ``fn(*args)`` in a thread of the pool; abandon it if the caller is cancelled."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        call = _Call(self, fn, args, ctx)
        try:
            return await anyio.to_thread.run_sync(
                call.run, abandon_on_cancel=True, limiter=self._limiter
            )
        except anyio.get_cancelled_exc_class():
            self._abandon(call)
            raise

    def _abandon(self, call: _Call) -> None:
        if isinstance(call.ctx, ThreadJobContext):
            call.ctx._stopped.set()
        with self.lock:
            call.abandoned = True
            running = call.started and not call.finished
            if running:
                self.abandoned += 1
                self.abandoned_running += 1
            still = self.abandoned_running
        if running:
            ctx = call.ctx
            log.warning(
                "job %r (id %s, queue %r): its attempt ended but its sync handler's thread "
                "cannot be stopped; abandoned it (its result will be discarded; %d abandoned "
                "thread(s) still running). Poll ctx.cancelled in long sync handlers.",
                ctx.name,
                ctx.job_id,
                ctx.queue,
                still,
            )


# -- processes ---------------------------------------------------------------------


class Encoded(msgspec.Struct, frozen=True):
    """A result a child process encoded already: stored as it is."""

    data: bytes


class ChildFailure(Exception):
    """A process handler's attempt failed in its child (see ``_child.Failed``)."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.message)
        self.failed = failed


class ChildDied(Exception):
    """A child process ended while it ran a job (a crash, or killed from outside)."""


def target_of(fn: Callable[..., Any], name: str) -> Target:
    """Where a child process imports ``fn`` from.

    Raises:
        ConfigurationError: ``fn`` cannot be imported by module and name (a
            closure, a lambda, or a function of an interactive session).
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        msg = (
            f"job {name!r}: a process handler must be a function at the top level of a module, "
            f"so that the worker's child processes can import it by name (got {qualname!r}); "
            "define it at module level"
        )
        raise ConfigurationError(msg)
    if module != "__main__":
        return Target(module, qualname)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return Target(spec.name, qualname)  # python -m package.module
    path = getattr(main, "__file__", None)
    if not path:
        msg = (
            f"job {name!r}: a process handler defined in an interactive session cannot be "
            "imported by a child process; define it in a module"
        )
        raise ConfigurationError(msg)
    return Target(module, qualname, os.path.abspath(path))


class _Child:
    """One child process and its pipes."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self.stdout = BufferedByteReceiveStream(process.stdout)

    async def send(self, message: Init | Call) -> None:
        assert self.process.stdin is not None
        try:
            await self.process.stdin.send(frame(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            code = await self.process.wait()
            msg = f"the child process for it ended with exit code {code} before the job was sent"
            raise ChildDied(msg) from None

    async def receive(self) -> Progress | Done | Failed:
        try:
            header = await self.stdout.receive_exactly(4)
            return _decode.decode(await self.stdout.receive_exactly(frame_length(header)))
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            code = await self.process.wait()
            msg = f"the child process running it ended with exit code {code}"
            raise ChildDied(msg) from None

    async def kill(self) -> None:
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
            await self.process.aclose()

    async def close(self, timeout: float) -> None:
        """Close its input (it exits); kill it if it has not within ``timeout``."""
        with anyio.CancelScope(shield=True):
            assert self.process.stdin is not None
            with anyio.move_on_after(timeout):
                await self.process.stdin.aclose()
                await self.process.wait()
            await self.kill()


class Processes:
    """The pool of child processes that runs process handlers.

    Attributes:
        size: children running jobs at once, at most.
        started: children started since the worker started.
        killed: children killed at a deadline, on a cancel or on shutdown.
        died: children that ended by themselves while running a job.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            msg = f"processes must be at least 1, got {size}"
            raise ConfigurationError(msg)
        self.size = size
        self.started = self.killed = self.died = 0
        self._idle: list[_Child] = []
        self._busy = 0
        self._limiter: anyio.CapacityLimiter | None = None
        self._preload: list[Target] = []  # what a new child imports before its first job
        self._stopping: Callable[[], bool] = lambda: False

    async def start(self, ctx: ServiceContext) -> None:
        """Start the pool's children with the worker, if its app has process handlers.

        A worker service: each child imports the app's process handlers at once,
        so that no job's deadline pays for a child's start.
        """
        self._stopping = ctx.stopping
        self._preload = [h.target for h in ctx.app.handlers.values() if h.target is not None]
        if not self._preload:
            return
        async with anyio.create_task_group() as tg:
            for _ in range(self.size - len(self._idle) - self._busy):
                tg.start_soon(self._add_idle)

    async def _add_idle(self) -> None:
        """Start a child and keep it idle (a warning, not an error, if it cannot start)."""
        try:
            child = await self._spawn()
        except (OSError, ChildDied) as exc:
            log.warning("cannot start a child process for process handlers: %s", exc)
            return
        if self._stopping() or len(self._idle) + self._busy >= self.size:
            await child.close(1.0)
        else:
            self._idle.append(child)

    async def _spawn(self) -> _Child:
        # Shielded: a child started but not yet ours would outlive a cancellation.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                [sys.executable, "-m", "asyncq._child_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=None,
            )
            self.started += 1
            child = _Child(process)
            level = logging.getLogger().getEffectiveLevel()
            try:
                await child.send(Init(list(sys.path), level, self._preload))
            except BaseException:
                await child.kill()
                raise
        return child

    async def run(self, handler: Handler[Any, Any], job: JobRecord, ctx: JobContext) -> Encoded:
        """Run one attempt in a child; the result comes back encoded.

        Raises:
            ChildFailure: the attempt failed in the child.
            ChildDied: the child ended while it ran the job.
        """
        assert handler.target is not None
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.size)
        async with self._limiter:
            child = None
            while self._idle and child is None:
                child = self._idle.pop()
                if child.process.returncode is not None:  # died while idle
                    await child.kill()
                    child = None
            kept = False
            self._busy += 1
            try:
                if child is None:
                    child = await self._spawn()
                await child.send(Call(handler.target, msgspec.structs.replace(job, errors=[])))
                while True:
                    reply = await child.receive()
                    if isinstance(reply, Progress):
                        await ctx.progress(reply.value)
                        continue
                    kept = True
                    break
            except ChildDied:
                self.died += 1
                raise
            except anyio.get_cancelled_exc_class():
                self.killed += 1
                raise
            finally:
                self._busy -= 1
                if child is not None:
                    if not kept:
                        await child.kill()
                    elif len(self._idle) + self._busy < self.size:
                        self._idle.append(child)
                    else:  # the pool grew while a job started it: one child too many
                        await child.close(1.0)
                if not kept and self._preload and not self._stopping():
                    with anyio.CancelScope(shield=True):
                        await self._add_idle()  # its replacement, ready for the next job
        if isinstance(reply, Failed):
            raise ChildFailure(reply)
        return Encoded(reply.result)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop the idle children (none runs a job once the worker's slots are done)."""
        self._stopping = lambda: True
        idle, self._idle = self._idle, []
        async with anyio.create_task_group() as tg:
            for child in idle:
                tg.start_soon(child.close, timeout)


@dataclass(eq=False)
class Offload:
    """A worker's pools for handlers off the event loop."""

    threads: Threads
    processes: Processes

    @classmethod
    def of(cls, threads: int | None, processes: int | None) -> Offload:
        return cls(
            Threads(DEFAULT_THREADS if threads is None else threads),
            Processes(default_processes() if processes is None else processes),
        )

    def stats(self) -> dict[str, int]:
        """Counts for operators: abandoned threads, and child processes started and lost."""
        return {
            "threads": self.threads.size,
            "threads_abandoned": self.threads.abandoned,
            "threads_abandoned_running": self.threads.abandoned_running,
            "processes": self.processes.size,
            "processes_started": self.processes.started,
            "processes_killed": self.processes.killed,
            "processes_died": self.processes.died,
        }

    async def aclose(self) -> None:
        await self.processes.aclose()
        if self.threads.abandoned_running:
            log.warning(
                "%d abandoned thread(s) of sync handlers still running: the process cannot "
                "exit until they return",
                self.threads.abandoned_running,
            )
