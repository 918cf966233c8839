"""A worker's child process for process handlers (``python -m asyncq._child_process``).

The worker (``_offload.Processes``) starts it with pipes for standard input
and output, and they exchange frames: a 4-byte big-endian length, then a
MessagePack message (msgspec; never pickle). The worker sends ``Init`` once,
then one ``Call`` per job; the child answers each call with ``Progress``
frames, then ``Done`` (the result, encoded) or ``Failed``. The child imports
the handler by its function's module and qualified name, decodes the payload
with the handler's schema and encodes the result itself, so no user object
ever crosses the boundary.

The child ignores SIGINT and SIGTERM (the worker owns it: it lets a running
job finish on a graceful shutdown, and kills the child at a deadline, on a
cancel, or when the shutdown timeout ends), and exits when its standard input
closes or its parent dies. What the handler prints goes to standard error.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import runpy
import signal
import struct
import sys
import threading
import time
import traceback
from typing import IO, TYPE_CHECKING, Any

import msgspec

from ._records import JobRecord

if TYPE_CHECKING:
    from ._handler import Handler

__all__ = ["Call", "Done", "Failed", "Init", "Progress", "Target", "main"]

_HEADER = struct.Struct(">I")
_TRACEBACK_LIMIT = 16_000


class Target(msgspec.Struct, frozen=True):
    """Where a child finds a handler: a module's name, or a script's path, and a qualified name."""

    module: str
    qualname: str
    path: str | None = None  # the script run as ``__main__``, loaded by path


class Init(msgspec.Struct, tag="init"):
    """The first frame: the worker's ``sys.path`` and logging level.

    The child imports what the worker imports, and logs to standard error at its
    level; it imports the handlers of ``preload`` at once.
    """

    path: list[str]
    log_level: int = logging.WARNING
    preload: list[Target] = []  # handlers to import now, before any job needs them


class Call(msgspec.Struct, tag="call"):
    """Run one attempt: the job as stored (its payload as bytes) and the handler's target."""

    target: Target
    job: JobRecord


class Progress(msgspec.Struct, tag="progress"):
    """The handler reported progress (``ctx.progress``)."""

    value: float


class Done(msgspec.Struct, tag="done"):
    """The attempt completed: its result, encoded with the handler's result type."""

    result: bytes


class Failed(msgspec.Struct, tag="failed"):
    """The attempt failed in the child.

    ``kind`` is ``error`` (the handler raised), ``retry`` or ``reject`` (it
    raised ``Retry``/``Reject``), ``decode`` (the payload does not match the
    schema), ``result`` (the result cannot be encoded) or ``load`` (the
    handler cannot be imported). ``verdict`` is the failure class the
    handler's and the app's rules give the exception, when one matched.
    """

    kind: str
    message: str
    error_type: str | None = None
    traceback: str | None = None
    verdict: str | None = None
    delay: float | None = None


ToChild = Init | Call
FromChild = Progress | Done | Failed
to_child_decoder = msgspec.msgpack.Decoder(ToChild)
from_child_decoder = msgspec.msgpack.Decoder(FromChild)
_encoder = msgspec.msgpack.Encoder()


def frame(message: ToChild | FromChild) -> bytes:
    """``message`` as one frame: its length, then its bytes."""
    data = _encoder.encode(message)
    return _HEADER.pack(len(data)) + data


def frame_length(header: bytes) -> int:
    """The length a frame's 4-byte header announces."""
    length: int = _HEADER.unpack(header)[0]
    return length


# -- the child's side --------------------------------------------------------------


class _Handlers:
    """The handlers this child has imported, by target."""

    def __init__(self) -> None:
        self._found: dict[Target, Handler[Any, Any]] = {}
        self._scripts: dict[str, dict[str, Any]] = {}

    def get(self, target: Target) -> Handler[Any, Any]:
        found = self._found.get(target)
        if found is None:
            found = self._found[target] = self._load(target)
        return found

    def _load(self, target: Target) -> Handler[Any, Any]:
        from ._handler import Handler

        if target.path is not None:
            namespace = self._scripts.get(target.path)
            if namespace is None:
                # Not as __main__: the script's `if __name__ == "__main__":` part must not run.
                namespace = runpy.run_path(target.path, run_name="__asyncq_main__")
                self._scripts[target.path] = namespace
        else:
            namespace = vars(importlib.import_module(target.module))
        head, *rest = target.qualname.split(".")
        obj: Any = namespace[head]
        for part in rest:
            obj = getattr(obj, part)
        if isinstance(obj, Handler):
            return obj
        for value in list(namespace.values()):  # the function, registered under another name
            if isinstance(value, Handler) and value.fn is obj:
                return value
        where = target.path or target.module
        msg = f"{target.qualname} in {where} is not a job registered with @app.job"
        raise LookupError(msg)


def _failed(kind: str, exc: BaseException, message: str | None = None) -> Failed:
    tb = "".join(traceback.format_exception(exc))[-_TRACEBACK_LIMIT:]
    return Failed(
        kind=kind,
        message=str(exc) if message is None else message,
        error_type=type(exc).__qualname__,
        traceback=tb,
    )


async def _attempt(handlers: _Handlers, call: Call, send: Any) -> Done | Failed:
    """One attempt in this child: load, decode, run, encode."""
    import anyio.to_thread

    from ._context import JobContext, _current
    from ._execution import _app_class
    from ._offload import ThreadJobContext
    from ._retry import seconds
    from .exceptions import Reject, Retry

    job = call.job
    try:
        handler = handlers.get(call.target)
    except Exception as exc:  # noqa: BLE001 - reported to the worker, which retries
        where = call.target.path or call.target.module
        message = f"cannot import {call.target.qualname} from {where} in a child process: {exc}"
        return _failed("load", exc, message)
    try:
        payload = handler.payload_codec.decode_payload(job.payload, handler.app.max_payload_bytes)
    except Exception as exc:  # noqa: BLE001
        message = f"payload does not decode as {handler.schema!r} for job {job.name!r}: {exc}"
        return _failed("decode", exc, message)

    async def progress(value: float) -> bool:
        send(Progress(value))
        return True

    fn = handler.fn
    assert fn is not None
    args: tuple[Any, ...] = (payload,)
    try:
        if handler.sync:
            ctx: JobContext = ThreadJobContext(job, progress=progress)
            if handler.takes_context:
                args = (payload, ctx)
            result = await anyio.to_thread.run_sync(_in_context, ctx, fn, args)
        else:
            ctx = JobContext(job, progress=progress)
            if handler.takes_context:
                args = (payload, ctx)
            reset = _current.set(ctx)
            try:
                result = await fn(*args)
            finally:
                _current.reset(reset)
    except Retry as exc:
        delay = None if exc.delay is None else seconds(exc.delay)
        return Failed(kind="retry", message=str(exc), error_type="Retry", delay=delay)
    except Reject as exc:
        return Failed(kind="reject", message=str(exc), error_type="Reject")
    except Exception as exc:  # noqa: BLE001 - every handler failure is reported
        failed = _failed("error", exc)
        failed.verdict = handler.options.retry.failure_class(exc) or _app_class(handler.app, exc)
        return failed
    try:
        return Done(handler.result_codec.encode_result(result))
    except Exception as exc:  # noqa: BLE001
        message = f"job {job.name!r} returned a value that cannot be stored: {exc}"
        return _failed("result", exc, message)


def _in_context(ctx: Any, fn: Any, args: tuple[Any, ...]) -> Any:
    from ._context import _current

    reset = _current.set(ctx)
    try:
        return fn(*args)
    finally:
        _current.reset(reset)


def _read(stream: IO[bytes]) -> ToChild | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    data = stream.read(frame_length(header))
    return to_child_decoder.decode(data)


def _watch_parent(parent: int) -> None:
    """Exit when the worker that started this child is gone (killed without closing the pipe)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main() -> None:
    """Serve calls from the worker until standard input closes."""
    import anyio

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The frames get the pipes; what user code prints goes to standard error.
    incoming = os.fdopen(os.dup(0), "rb")
    outgoing = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()

    def send(message: FromChild) -> None:
        outgoing.write(frame(message))
        outgoing.flush()

    handlers = _Handlers()
    while (message := _read(incoming)) is not None:
        if isinstance(message, Init):
            sys.path[:] = [*message.path, *(p for p in sys.path if p not in message.path)]
            logging.basicConfig(
                level=message.log_level,
                stream=sys.stderr,
                format="%(asctime)s %(levelname)-7s %(name)s [child %(process)d]: %(message)s",
            )
            for target in message.preload:
                # A handler that fails to import fails its jobs, with the reason, instead.
                with contextlib.suppress(Exception):
                    handlers.get(target)
            continue
        send(anyio.run(_attempt, handlers, message, send))
