"""The worker's typed seams: the options it takes, and what a service beside it sees."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

if TYPE_CHECKING:
    from ._app import App
    from .backends.base import Backend

__all__ = ["Service", "ServiceContext", "WorkerOptions"]


@dataclass(frozen=True, eq=False)
class ServiceContext:
    """What a worker service sees of the worker it runs beside.

    Attributes:
        app: the worker's app.
        backend: the app's backend, open while the service runs.
        name: the worker's name, as in its leases and logs.
        queues: the queues the worker claims from.
        stopping: tells whether the worker has stopped claiming (``Worker.stopping``).
    """

    app: App
    backend: Backend
    name: str
    queues: Sequence[str]
    stopping: Callable[[], bool]


#: A long-running task beside a worker's loops (cron schedules, health probes):
#: ``async def service(ctx: ServiceContext) -> None``, started once the backend
#: is open and cancelled when the worker stops.
Service: TypeAlias = Callable[[ServiceContext], Coroutine[Any, Any, None]]


class WorkerOptions(TypedDict, total=False):
    """``Worker``'s keyword arguments, as ``App.worker`` and ``App.run_worker`` take them.

    A key left out keeps ``Worker``'s default.
    """

    queues: Sequence[str] | None
    concurrency: int
    lease: float
    shutdown_timeout: float
    heartbeat: float | None
    poll_interval: float
    recover_interval: float | None
    burst: bool
    name: str | None
    prefetch: int | None
    services: Sequence[Service]
    threads: int | None
    processes: int | None
    warn_blocking: float | None
