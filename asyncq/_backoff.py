"""Backoff: exponential waits, capped, between tries at a backend that went away."""

from __future__ import annotations

import logging

import anyio

__all__ = ["Backoff"]

log = logging.getLogger("asyncq.worker")


class Backoff:
    """Exponential backoff with a cap, for reconnecting to a backend that went away."""

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self, what: str, exc: BaseException | None) -> None:
        log.warning("%s (%s); retrying in %.1fs", what, exc, self.delay)
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)
