"""Development mode: warn when an async handler blocks the worker's event loop.

A worker service beats every quarter of the threshold on the event loop; a
watchdog thread looks at the beats, and when none came for longer than the
threshold, it reads the loop thread's stack (``sys._current_frames``) and logs
a warning naming the job whose handler is on it, and the line it was blocked
at. One warning per blocked stretch. It costs a timer on the loop and a
sleeping thread, so it is meant for development and tests
(``Worker(warn_blocking=0.1)``, ``asyncq run --warn-blocking 0.1``).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING

import anyio

from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from types import CodeType, FrameType

    from ._app import App
    from ._worker_types import ServiceContext

__all__ = ["BlockingDetector"]

log = logging.getLogger("asyncq.worker")


class BlockingDetector:
    """Warns when the event loop is blocked for longer than ``threshold`` seconds.

    Use it as a worker service: ``Worker(services=[BlockingDetector(app, 0.1).run])``
    (what ``warn_blocking=`` does).
    """

    def __init__(self, app: App, threshold: float = 0.1) -> None:
        if threshold <= 0:
            msg = f"warn_blocking must be positive seconds, got {threshold}"
            raise ConfigurationError(msg)
        self.app = app
        self.threshold = threshold
        self._beat = time.monotonic()

    async def run(self, ctx: ServiceContext) -> None:
        """Beat on the event loop while a watchdog thread looks for missed beats."""
        loop_thread = threading.get_ident()
        stop = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(loop_thread, stop), name="asyncq-blocking", daemon=True
        )
        self._beat = time.monotonic()
        watchdog.start()
        try:
            while True:
                self._beat = time.monotonic()
                await anyio.sleep(self.threshold / 4)
        finally:
            stop.set()

    def _watch(self, loop_thread: int, stop: threading.Event) -> None:
        reported = None
        while not stop.wait(self.threshold / 4):
            beat = self._beat
            blocked = time.monotonic() - beat
            if blocked <= self.threshold or beat == reported:
                continue
            reported = beat
            frame = sys._current_frames().get(loop_thread)
            job, where = self.locate(frame)
            log.warning(
                "the event loop has been blocked for %.0f ms (over %.0f ms) by %s at %s: "
                "an async handler must not block; make it a plain def (it runs in a thread) "
                "or process=True for CPU-bound work",
                blocked * 1000,
                self.threshold * 1000,
                f"job {job!r}" if job else "code outside any handler",
                where,
            )

    def locate(self, frame: FrameType | None) -> tuple[str | None, str]:
        """The job whose handler is on the stack from ``frame``, and where it is blocked."""
        codes: dict[CodeType, str] = {}
        for handler in list(self.app.handlers.values()):
            code = getattr(handler.fn, "__code__", None)
            if code is not None:
                codes[code] = handler.name
        innermost = frame
        while frame is not None:
            name = codes.get(frame.f_code)
            if name is not None:
                return name, _where(frame) + (
                    f" (in {_where(innermost)})" if innermost is not frame else ""
                )
            frame = frame.f_back
        return None, _where(innermost) if innermost is not None else "an unknown line"


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "an unknown line"
    code = frame.f_code
    return f"{code.co_filename}:{frame.f_lineno} in {code.co_qualname}"
