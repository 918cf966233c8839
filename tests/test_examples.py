"""The examples run, so they cannot rot."""

from __future__ import annotations

import anyio
import pytest

from asyncq.testing import in_memory

pytestmark = pytest.mark.anyio


async def test_quickstart_works_its_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    from examples import quickstart

    with anyio.fail_after(30):
        async with in_memory(quickstart.app):
            result = await quickstart.main(40)
    assert result == quickstart.Resized("cat.png", 640, 640 * 640 // 3)
    out = capsys.readouterr().out
    assert "enqueued 40 resize jobs" in out
    assert "40/40 done" in out
