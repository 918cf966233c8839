"""asyncq: an asyncio-native, typed job queue.

Declare jobs with ``@app.job(schema=...)``, enqueue typed payloads, run
workers with ``asyncq run module:app``. See ``asyncq.backends`` for the stores.
"""

import contextlib

from ._app import App, JobDecorator
from ._context import JobContext, current_job
from ._events import EventKind, EventPage, EventsLost, JobEvent
from ._flow import Flow, FlowNode
from ._handler import Handler, JobHandle, JobOptions
from ._instrumentation import Instrumentation
from ._limits import Circuit, Limit
from ._middleware import CallNext, Middleware
from ._options import (
    EnqueueAndWaitArgs,
    EnqueueArgs,
    EnqueueManyArgs,
    ItemArgs,
    KeyArgs,
    ScheduleArgs,
)
from ._records import (
    CircuitState,
    ErrorInfo,
    ErrorKind,
    JobRecord,
    JobState,
    LimitState,
    LogLine,
    WorkerInfo,
    WorkerStatus,
)
from ._retry import FailureClass, RetryPolicy
from ._telemetry import Telemetry
from ._worker import FatalFailure, Worker
from .admin import Admin
from .exceptions import (
    AsyncqError,
    BackendError,
    BackendUnavailable,
    CircuitOpen,
    ConfigurationError,
    JobActive,
    JobCancelled,
    JobFailed,
    JobNotFound,
    Reject,
    Retry,
    UnknownParent,
    ValidationError,
)

__all__ = [
    "Admin",
    "App",
    "AsyncqError",
    "BackendError",
    "BackendUnavailable",
    "CallNext",
    "Circuit",
    "CircuitOpen",
    "CircuitState",
    "ConfigurationError",
    "EnqueueAndWaitArgs",
    "EnqueueArgs",
    "EnqueueManyArgs",
    "ErrorInfo",
    "ErrorKind",
    "EventKind",
    "EventPage",
    "EventsLost",
    "FailureClass",
    "FatalFailure",
    "Flow",
    "FlowNode",
    "Handler",
    "Instrumentation",
    "ItemArgs",
    "JobActive",
    "JobCancelled",
    "JobContext",
    "JobDecorator",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobOptions",
    "JobRecord",
    "JobState",
    "KeyArgs",
    "Limit",
    "LimitState",
    "LogLine",
    "Middleware",
    "Reject",
    "Retry",
    "RetryPolicy",
    "ScheduleArgs",
    "Telemetry",
    "UnknownParent",
    "ValidationError",
    "Worker",
    "WorkerInfo",
    "WorkerStatus",
    "current_job",
]

__version__ = "0.1.0.dev0"

# Public names show as asyncq.X in reprs, tracebacks and docs, not asyncq._module.X
# (nor asyncq.admin.Admin: the admin module holds its result types, Admin is asyncq's).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(("asyncq._", "asyncq.admin")):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = "asyncq"
del _name, _obj
