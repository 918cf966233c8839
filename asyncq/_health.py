"""Liveness and readiness probes over HTTP/1.1, for Kubernetes, with no web framework.

``asyncq run --health-port 8080`` serves, beside the worker:

- ``GET /livez``: 200 while the worker's event loop answers at all (a loop
  blocked by a synchronous call in a handler answers nothing, and the probe
  times out);
- ``GET /readyz``: 200 when the backend answers a cheap call (``stats`` on
  one of the worker's queues) within ``ready_timeout`` and the worker is not
  stopping; 503 otherwise, with the reason;
- ``GET /metrics``, with ``--metrics``: the OpenTelemetry metrics in the
  Prometheus text format (``asyncq._metrics``).

Bodies are small JSON objects. Each connection gets one response and is
closed; requests larger than a few KiB, or slower than ``read_timeout``, are
dropped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from .exceptions import BackendError

if TYPE_CHECKING:
    from ._metrics import Exposition
    from ._worker_types import ServiceContext

__all__ = ["HealthServer"]

log = logging.getLogger("asyncq.health")

_MAX_REQUEST = 8192
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthServer:
    """Serves ``/livez`` and ``/readyz`` for one worker; ``serve`` is a worker service.

    Args:
        host: the address to listen on (``0.0.0.0`` reaches the pod's IP).
        port: the TCP port; 0 picks a free one (read ``port`` after ``bind``).
        ready_timeout: seconds the backend gets to answer a readiness check.
        read_timeout: seconds a client gets to send its request.
        metrics: serves ``/metrics`` from it (``asyncq._metrics.install()``).
    """

    def __init__(
        self,
        host: str = "0.0.0.0",  # probes come from the kubelet, to the pod's IP
        port: int = 8080,
        *,
        ready_timeout: float = 2.0,
        read_timeout: float = 5.0,
        metrics: Exposition | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.read_timeout = read_timeout
        self.metrics = metrics
        self._metrics_type = "text/plain; version=0.0.4; charset=utf-8"
        self._listener: SocketListener | None = None

    def __repr__(self) -> str:
        return f"HealthServer({self.host!r}, {self.port})"

    async def bind(self) -> None:
        """Listen now, so a port in use fails before the worker starts (idempotent).

        Raises:
            OSError: the address cannot be bound.
        """
        if self._listener is None:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            first, *others = listener.listeners
            for extra in others:  # one address family is enough for a probe
                await extra.aclose()
            assert isinstance(first, SocketListener)
            self._listener = first
            self.port = first.extra(SocketAttribute.local_port)

    async def serve(self, worker: ServiceContext) -> None:
        """A worker service: answer probes about ``worker`` until cancelled (binds first if needed).

        Pass it to the worker: ``app.worker(services=[server.serve])``.
        """
        await self.bind()
        assert self._listener is not None
        log.info("health probes on http://%s:%d/livez and /readyz", self.host, self.port)
        async with self._listener, anyio.create_task_group() as tg:
            while True:
                stream = await self._listener.accept()
                tg.start_soon(self._answer, stream, worker)

    async def _answer(self, stream: SocketStream, worker: ServiceContext) -> None:
        async with stream:
            try:
                with anyio.fail_after(self.read_timeout):
                    head = await _read_head(stream)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            content_type = "application/json"
            body: dict[str, str] | bytes
            if head is None:
                method, status, body = "GET", 400, {"status": "bad request"}
            else:
                method = head[0]
                status, body = await self.respond(*head, worker)
            if isinstance(body, bytes):
                payload, content_type = body, self._metrics_type
            else:
                payload = msgspec.json.encode(body)
            response = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Cache-Control: no-store\r\n"
                "Connection: close\r\n\r\n"
            ).encode("ascii")
            try:
                await stream.send(response if method == "HEAD" else response + payload)
            except (anyio.BrokenResourceError, OSError):
                return

    async def respond(
        self, method: str, path: str, worker: ServiceContext
    ) -> tuple[int, dict[str, str] | bytes]:
        """The status and body for one request: JSON, or the metrics' bytes."""
        path = path.split("?", 1)[0]
        paths = ("/livez", "/readyz", "/metrics") if self.metrics else ("/livez", "/readyz")
        if path not in paths:
            return 404, {"status": "not found", "paths": " ".join(paths)}
        if method not in ("GET", "HEAD"):
            return 405, {"status": "method not allowed"}
        if path == "/metrics" and self.metrics is not None:
            # Collecting calls the instruments' callbacks: off the event loop.
            body, self._metrics_type = await anyio.to_thread.run_sync(self.metrics.render)
            return 200, body
        if path == "/livez":
            return 200, {"status": "ok", "worker": worker.name}
        return await self.readiness(worker)

    async def readiness(self, worker: ServiceContext) -> tuple[int, dict[str, str]]:
        """200 if the worker runs and its backend answers quickly; 503 with a reason if not."""
        if worker.stopping():
            return 503, {"status": "unavailable", "reason": "the worker is stopping"}
        backend = worker.backend
        try:
            with anyio.fail_after(self.ready_timeout):
                await backend.stats(worker.queues[:1])
        except TimeoutError:
            reason = f"backend {backend.url} did not answer within {self.ready_timeout:g}s"
            return 503, {"status": "unavailable", "reason": reason}
        except BackendError as exc:
            return 503, {"status": "unavailable", "reason": f"backend {backend.url}: {exc}"}
        return 200, {"status": "ready", "worker": worker.name}


async def _read_head(stream: SocketStream) -> tuple[str, str] | None:
    """Read up to the blank line ending the headers; the method and path, or ``None`` if bad."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > _MAX_REQUEST:
            return None
        data += await stream.receive()
    parts = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0].split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return None
    try:
        return parts[0].decode("ascii"), parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
