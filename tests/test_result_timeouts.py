"""A wait for a result that runs out says which job, and how to find it later."""

from __future__ import annotations

import re

import anyio
import msgspec
import pytest

from asyncq import App
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.anyio


class Charge(msgspec.Struct):
    order_id: str


def make_app() -> App:
    app = App("timeouts", backend="memory://")

    @app.job(schema=Charge, name="charge", queue="payments")
    async def charge(payload: Charge) -> str:
        return payload.order_id

    return app


async def test_enqueue_and_wait_names_the_job_its_queue_and_how_to_look_it_up() -> None:
    app = make_app()
    charge = app.handlers["charge"]
    with anyio.fail_after(10):
        async with app:
            with pytest.raises(TimeoutError) as caught:
                await charge.enqueue_and_wait(Charge("o-1"), timeout=0.05)
            match = re.fullmatch(
                r"no result for job 'charge' (\w+) \(queue 'payments'\) within 0.05s: it may "
                r"still run \(is a worker running for its queue\?\); look it up with "
                r"app.get_job\('(\w+)'\) or `asyncq job MODULE:APP (\w+)`",
                str(caught.value),
            )
            assert match is not None, str(caught.value)
            assert match[1] == match[2] == match[3]
            # the job is there, as the message says, and a worker still runs it
            await run_until_idle(app)
            assert await app.get_job(match[1]).result(timeout=5) == "o-1"


async def test_handle_result_names_the_job_and_how_to_look_it_up() -> None:
    app = make_app()
    charge = app.handlers["charge"]
    with anyio.fail_after(10):
        async with app:
            handle = await charge.enqueue(Charge("o-2"))
            with pytest.raises(TimeoutError) as caught:
                await handle.result(timeout=0.05)
    assert str(caught.value) == (
        f"no result for job {handle.id} within 0.05s: it may still run (is a worker running "
        f"for its queue?); look it up with app.get_job({handle.id!r}) or "
        f"`asyncq job MODULE:APP {handle.id}`"
    )


async def test_a_timeout_inside_the_store_is_not_taken_for_the_callers() -> None:
    app = make_app()
    charge = app.handlers["charge"]

    async def times_out(job_id: str) -> None:
        raise TimeoutError("the store's own")

    with anyio.fail_after(10):
        async with app:
            handle = await charge.enqueue(Charge("o-3"))
            backend = await app.backend_opened()
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(backend, "wait_finished", times_out)
                with pytest.raises(TimeoutError, match=r"^the store's own$"):
                    await handle.result(timeout=5)
