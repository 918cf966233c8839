"""Flows: a graph of jobs that wait for one another, stored in one atomic step.

``app.flow()`` makes a ``Flow``; ``flow.add(handler, payload, after=[...])``
adds a node and returns it, so later nodes can name it as a parent;
``await flow.enqueue()`` stores every node at once (all or nothing) and
returns the handles in the order the nodes were added.

The graph is checked before anything is stored: a node can only wait for a
node added before it (so a flow has no cycle), a node of another flow is
refused, and every node is in one queue (parents and children share a queue,
see ``UnknownParent``), so every store, a Redis Cluster included, writes the
flow in one atomic step.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack

from ._handler import Handler, JobHandle
from ._options import EnqueueArgs, EnqueueOptions
from .backends.base import stored_as_given
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._app import App
    from ._records import JobRecord

__all__ = ["Flow", "FlowNode"]

T = TypeVar("T")
R = TypeVar("R")


class FlowNode(Generic[R]):
    """One job of a ``Flow``, before and after it is stored.

    Attributes:
        id: the job's id, known from ``add`` on (name it in ``after=``).
    """

    __slots__ = ("_flow", "_handle", "_handler", "id")

    def __init__(self, flow: Flow, job_id: str, handler: Handler[Any, R]) -> None:
        self._flow = flow
        self._handler = handler
        self._handle: JobHandle[R] | None = None
        self.id = job_id

    @property
    def handle(self) -> JobHandle[R]:
        """The job's handle, typed by its handler's result, once the flow is enqueued.

        Raises:
            RuntimeError: the flow was not enqueued yet.
        """
        if self._handle is None:
            msg = f"flow node {self.id} has no handle yet: await flow.enqueue() first"
            raise RuntimeError(msg)
        return self._handle

    def __repr__(self) -> str:
        return f"FlowNode(id={self.id!r}, name={self._handler.name!r})"


class Flow:
    """A graph of jobs, enqueued together with ``enqueue()``: all or nothing.

    Made by ``app.flow()``. Fan-out and fan-in::

        flow = app.flow()
        parts = [flow.add(resize, r) for r in requests]   # fan-out
        done = flow.add(zip_all, Zip(...), after=parts)   # fan-in
        handles = await flow.enqueue()
    """

    def __init__(self, app: App) -> None:
        self._app = app
        self._nodes: list[FlowNode[Any]] = []
        self._records: list[JobRecord] = []
        self._ids: set[str] = set()
        self._enqueued = False

    def __len__(self) -> int:
        return len(self._nodes)

    def add(
        self,
        handler: Handler[T, R],
        payload: T,
        /,
        **options: Unpack[EnqueueArgs],
    ) -> FlowNode[R]:
        """Add a job that runs once every job in ``after`` completed; return its node.

        ``after`` holds nodes added to this flow before, and handles or ids
        of jobs already stored (in the flow's queue). The other options are
        ``enqueue``'s (``after_failure`` included).

        Raises:
            ValidationError: the payload does not match the handler's schema.
            ConfigurationError: an option is invalid, ``after`` names a node of
                another flow, or the id is already a node of this flow.
            RuntimeError: the flow was enqueued already.
        """
        if self._enqueued:
            msg = "this flow was enqueued already: make a new one with app.flow()"
            raise RuntimeError(msg)
        parents: list[str] = []
        for parent in options.get("after") or ():
            if isinstance(parent, FlowNode) and parent._flow is not self:
                msg = (
                    f"after=: node {parent.id} belongs to another flow; a flow can wait only"
                    " for its own nodes and for jobs already stored"
                )
                raise ConfigurationError(msg)
            parents.append(parent if isinstance(parent, str) else parent.id)
        if options.get("debounce") is not None:
            msg = (
                f"Flow.add({handler.name!r}): a flow's jobs cannot be debounced; enqueue the "
                "job on its own with debounce="
            )
            raise ConfigurationError(msg)
        fields: dict[str, Any] = {**options, "after": parents or None}
        checked = EnqueueOptions.of(fields, handler.name, "Flow.add")
        record = handler._record(payload, checked, time.time())
        if record.id in self._ids:
            msg = f"the flow already has a node with id {record.id!r}"
            raise ConfigurationError(msg)
        node = FlowNode(self, record.id, handler)
        self._nodes.append(node)
        self._records.append(record)
        self._ids.add(record.id)
        return node

    def _check(self) -> None:
        """Refuse a graph that cannot be stored as given, before anything is stored."""
        queues = {record.queue for record in self._records}
        if len(queues) > 1:
            msg = (
                f"a flow's jobs share one queue (parents and children do), this one spans"
                f" {', '.join(sorted(queues))}"
            )
            raise ConfigurationError(msg)
        before: set[str] = set()
        for record in self._records:
            for parent in record.parents:
                if parent in self._ids and parent not in before:
                    msg = (
                        f"flow node {record.id} waits for node {parent}, added after it:"
                        " the flow would have a cycle"
                    )
                    raise ConfigurationError(msg)
            before.add(record.id)

    async def enqueue(self) -> list[JobHandle[Any]]:
        """Store every node in one atomic step; return the handles in the order added.

        A node whose id (or key) was stored already comes back with
        ``created`` False, as ``enqueue`` does.

        Raises:
            ConfigurationError: a cycle, or nodes in more than one queue; nothing stored.
            UnknownParent: a parent outside the flow is not stored; nothing stored.
            RuntimeError: the flow was enqueued already.
        """
        if self._enqueued:
            msg = "this flow was enqueued already: make a new one with app.flow()"
            raise RuntimeError(msg)
        self._check()
        if not self._records:
            self._enqueued = True
            return []
        stored = await self._app.enqueue_records(self._records)
        self._enqueued = True
        handles: list[JobHandle[Any]] = []
        for node, record, got in zip(self._nodes, self._records, stored, strict=True):
            handle = JobHandle(
                self._app,
                got.id,
                node._handler.result_codec,
                created=stored_as_given(record, got),
            )
            node._handle = handle
            handles.append(handle)
        return handles
