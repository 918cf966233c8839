"""Given: what docs/backends.md's fragment of a worker has at hand.

A store with a job waiting, the outcomes of the attempts the worker just
finished (none yet), the queues it serves, how many jobs it can take, its id.
"""

from asyncq import App
from asyncq.backends.base import SETTLE_ON_CLAIM  # noqa: F401 - the fragment's
from asyncq.backends.memory import MemoryBackend

_app = App("yours", backend=MemoryBackend())


@_app.job(schema=dict, name="ping")
async def ping(payload: dict[str, object]) -> None: ...


# test_docs.py runs this with an await allowed at the top level
await ping.enqueue({})  # noqa: F704
backend = await _app.backend_opened()  # noqa: F704
outcomes: list[object] = []
queues, n, w = ["default"], 10, "worker-1"
