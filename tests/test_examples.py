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
    assert result == quickstart.Resized("cat.png", 640, 80 * 60)  # an eighth wide, 4:3
    out = capsys.readouterr().out
    assert "enqueued 40 resize jobs" in out
    assert "40/40 done" in out


async def test_observability_prints_chained_spans_and_metrics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re

    from examples import observability

    with anyio.fail_after(30):
        async with in_memory(observability.app):
            receipt = await observability.main()
    assert receipt == observability.Receipt("o-1", 500)
    out = capsys.readouterr().out
    pattern = r"span\s+(.+?)\s+(PRODUCER|CONSUMER|INTERNAL) trace (\w+) id (\w+) parent (\S+) ?(.*)"
    spans = [re.fullmatch(pattern, line) for line in out.splitlines() if line.startswith("span")]
    found = {(m[1], m[6]): m for m in spans if m is not None}
    assert len(found) == len(spans) == 7
    checkout = found["checkout", ""]
    request = found["enqueue_and_wait payments", ""]
    producer = found["enqueue payments", ""]
    consumer = found["process payments", "completed"]
    assert request[5] == checkout[4]
    assert producer[5] == request[4]
    assert consumer[5] == producer[4]
    assert {checkout[3], request[3], producer[3], consumer[3]} == {checkout[3]}
    retried = found["process default", "retried exception asyncq.job.retry"]
    assert retried[5] == found["enqueue default", ""][4]
    assert re.search(r"metric asyncq\.jobs\.retried +queue=default job=notify .* 1$", out, re.M)
    assert re.search(r"metric asyncq\.queue\.depth +queue=payments state=completed +1$", out, re.M)


async def test_retries_example_ends_each_job_as_documented() -> None:
    from examples import retries

    with anyio.fail_after(30):
        async with in_memory(retries.app):
            outcomes = await retries.main()
    assert outcomes["charge"] == "charged 500 for o-1"
    assert outcomes["rate_limited"] == "accepted"
    assert outcomes["o-3"] == outcomes["o-4"] == outcomes["o-5"] == "dead"
    retried = sorted(v for k, v in outcomes.items() if k.startswith("retried"))
    assert retried == ["dead", "valid"]


async def test_image_pipeline_fans_out_fans_in_and_applies_its_failure_policy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from examples import image_pipeline

    with anyio.fail_after(30):
        async with in_memory(image_pipeline.app):
            outcomes = await image_pipeline.main()
    assert outcomes == {
        "holiday": "album holiday: 5 images, 9600 bytes",
        "holiday report": "album holiday: 5 resized, 0 failed",
        "broken report": "album broken: 2 resized, 1 failed",
        "broken zip": "dead (dependency)",
        "broken notify": "dead",
    }
    assert "broken zip: dead (dependency)" in capsys.readouterr().out
