"""A Redis backend opened for one test, in a namespace of its own, and dropped after it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from asyncq.backends.redis import RedisBackend
from conftest import unique_namespace

__all__ = ["by_evalsha", "opened", "unique_namespace"]


@contextlib.asynccontextmanager
async def opened(backend: RedisBackend) -> AsyncIterator[RedisBackend]:
    """``backend`` opened; closed, and its keys dropped, on the way out."""
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
        await backend.drop()


def by_evalsha(backend: RedisBackend) -> RedisBackend:
    """``backend`` (not opened yet) calling its scripts by ``EVALSHA``, as it does on a
    server without functions, whatever this one has."""
    backend._transport._library = None
    return backend
