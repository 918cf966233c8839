"""``enqueue(key=..., key_ttl=...)`` and ``enqueue(key=..., debounce=...)`` through the API.

The stores' side is ``tests/backends/test_key_options.py``; here: the options'
checks, how ``Handler`` builds the record, ``enqueue_many`` items,
``enqueue_and_wait``, ``Admin.enqueue``, and a burst run by a worker.
"""

from __future__ import annotations

import math
import time
from typing import Any

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError, JobState
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio


class Sync(msgspec.Struct):
    account: str
    version: int


def make_app() -> tuple[App, Any, list[Sync]]:
    app = App("throttle", backend="memory://")
    ran: list[Sync] = []

    @app.job(schema=Sync, name="sync", result_ttl=10.0)
    async def sync(payload: Sync) -> int:
        ran.append(payload)
        return payload.version

    return app, sync, ran


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_ttl": 60}, "key_ttl= needs key="),
        ({"debounce": 5}, "debounce= needs key="),
        ({"key": "k", "key_ttl": 0}, "key_ttl must be a positive finite number"),
        ({"key": "k", "key_ttl": -1.0}, "key_ttl must be a positive finite number"),
        ({"key": "k", "debounce": math.inf}, "debounce must be a positive finite number"),
        ({"key": "k", "debounce": math.nan}, "debounce must be a positive finite number"),
        ({"key": "k", "debounce": True}, "debounce must be a positive finite number"),
        ({"key": "k", "debounce": "5"}, "debounce must be a positive finite number"),
        ({"key": "k", "debounce": 5, "key_ttl": 60}, "not both"),
        ({"key": "k", "debounce": 5, "delay": 1}, "debounce= is the delay"),
    ],
)
async def test_invalid_key_options_are_refused_and_nothing_is_stored(
    options: dict[str, Any], message: str
) -> None:
    app, sync, _ = make_app()
    async with app:
        with pytest.raises(ConfigurationError, match=message) as caught:
            await sync.enqueue(Sync("a", 1), **options)
        assert "job 'sync'" in str(caught.value)
        assert await app.backend.list_jobs() == []


def test_the_record_carries_key_ttl_and_keeps_the_result_as_long() -> None:
    _, sync, _ = make_app()
    record = sync.record(Sync("a", 1), key="a", key_ttl=60.0, now=100.0)
    assert record.key_ttl == 60.0
    assert record.result_ttl == 60.0  # the job's 10 s raised to the key's period
    assert record.debounce is None
    debounced = sync.record(Sync("a", 1), key="a", debounce=5.0, now=100.0)
    assert debounced.debounce == 5.0
    assert debounced.scheduled_at == 105.0
    assert debounced.state is JobState.SCHEDULED
    assert debounced.result_ttl == 10.0


async def test_key_ttl_runs_a_key_once_per_period() -> None:
    app, sync, ran = make_app()
    async with app:
        first = await sync.enqueue(Sync("a", 1), key="a", key_ttl=0.3)
        await run_until_idle(app)
        again = await sync.enqueue(Sync("a", 2), key="a", key_ttl=0.3)
        assert (again.id, again.created) == (first.id, False)
        assert await again.result(timeout=1) == 1
        await anyio.sleep(0.35)
        later = await sync.enqueue(Sync("a", 3), key="a", key_ttl=0.3)
        assert later.created
        await run_until_idle(app)
        assert [p.version for p in ran] == [1, 3]


async def test_a_burst_of_debounced_enqueues_runs_once_with_the_last_payload() -> None:
    app, sync, ran = make_app()
    async with app:
        handles = [await sync.enqueue(Sync("a", n), key="a", debounce=0.2) for n in range(5)]
        assert [h.created for h in handles] == [True, False, False, False, False]
        assert len({h.id for h in handles}) == 1
        with anyio.fail_after(5):
            async with app.worker(concurrency=2):
                assert await handles[-1].result() == 4
        assert [p.version for p in ran] == [4]


async def test_enqueue_many_takes_key_options_per_item_only() -> None:
    app, sync, _ = make_app()
    async with app:
        handles = await sync.enqueue_many(
            [
                (Sync("a", 1), {"key": "a", "debounce": 60.0}),
                (Sync("a", 2), {"key": "a", "debounce": 60.0}),
                (Sync("b", 1), {"key": "b", "key_ttl": 30.0}),
            ]
        )
        assert [h.created for h in handles] == [True, False, True]
        assert handles[0].id == handles[1].id
        stored = await handles[0].info()
        assert msgspec.msgpack.decode(stored.payload, type=Sync) == Sync("a", 2)
        assert (await handles[2].info()).key_ttl == 30.0
        with pytest.raises(TypeError, match="'debounce'"):
            await sync.enqueue_many([Sync("c", 1)], debounce=1.0)  # type: ignore[call-arg]


async def test_enqueue_and_wait_and_admin_enqueue_take_them() -> None:
    app, sync, _ = make_app()
    async with app:
        async with app.worker(concurrency=1):
            with anyio.fail_after(5):
                assert await sync.enqueue_and_wait(Sync("a", 7), key="a", key_ttl=60.0) == 7
                # The key is held: the stored result answers, the handler does not run.
                assert await sync.enqueue_and_wait(Sync("a", 8), key="a", key_ttl=60.0) == 7
        handle = await app.admin.enqueue(
            "sync", {"account": "z", "version": 1}, key="z", debounce=30.0
        )
        record = await handle.info()
        assert record.state is JobState.SCHEDULED
        assert record.scheduled_at == pytest.approx(time.time() + 30.0, abs=1.0)
