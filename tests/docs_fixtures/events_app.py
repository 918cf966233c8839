"""Given: docs/events.md's ``app``, ``log`` and ``checkpoint``, and a job that keeps failing.

The fragment follows the ``dead`` and ``retrying`` events of the queue
``images`` for ever. The job below fails at every attempt, so whenever the
stream starts, a ``retrying`` event comes soon after.
"""

import logging

import msgspec

import asyncq  # noqa: F401 - the fragment names asyncq.EventsLost
from asyncq import App, RetryPolicy

app = App("yours", backend="memory://", events=True)
log = logging.getLogger("yours")
checkpoints: list[str | None] = []


def checkpoint(last_id: str | None) -> None:
    """Keep the stream's position, to resume from it after a restart."""
    checkpoints.append(last_id)


class Thumbnail(msgspec.Struct):
    path: str


@app.job(schema=Thumbnail, queue="images", max_attempts=1000, retry=RetryPolicy.fixed(0.05))
async def thumbnail(payload: Thumbnail) -> None:
    raise OSError(f"no such file: {payload.path}")


# test_docs.py runs this with an await allowed at the top level
await thumbnail.enqueue(Thumbnail("cat.png"))  # noqa: F704
