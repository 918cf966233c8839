"""What a type checker must see in ``app.sync`` (checked by mypy, never run)."""

from __future__ import annotations

from typing import assert_type

import msgspec

from asyncq import App, JobRecord
from asyncq.sync import SyncJob


class Resize(msgspec.Struct):
    url: str
    width: int


class Other(msgspec.Struct):
    name: str


class Done(msgspec.Struct):
    path: str


app = App("typing")


@app.job(schema=Resize)
async def resize(payload: Resize) -> Done:
    return Done(payload.url)


def sync_calls() -> None:
    handle = app.sync.enqueue(resize, Resize("a", 1), priority=2, key="k")
    assert_type(handle, SyncJob[Done])
    assert_type(handle.result(timeout=1), Done)
    assert_type(handle.info(), JobRecord)
    assert_type(handle.cancel(), JobRecord)
    assert_type(app.sync.enqueue_and_wait(resize, Resize("a", 1), timeout=5), Done)
    assert_type(app.sync.enqueue_many(resize, [Resize("a", 1)]), list[SyncJob[Done]])
    assert_type(app.sync.get_job("id", resize), SyncJob[Done])
    app.sync.enqueue(resize, Other("x"))  # type: ignore[misc]
    app.sync.enqueue(resize, Resize("a", 1), priorty=1)  # type: ignore[call-arg]
