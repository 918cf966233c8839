"""Sync code under plain pytest (no async plugin): ``app.sync`` with the plugin's ``jobs``.

Run by tests/test_pytest_plugin.py with only asyncq's plugin loaded.
"""

from __future__ import annotations

import msgspec
import pytest

from asyncq import App, JobState

app = App("sample-sync", telemetry=False)


class Signup(msgspec.Struct):
    email: str


@app.job(schema=Signup, name="sample.welcome")
async def welcome(payload: Signup) -> str:
    return f"welcome {payload.email}"


def signup_view(email: str) -> str:
    """What a Django or Flask view does: enqueue, answer at once."""
    return app.sync.enqueue(welcome, Signup(email), key=email).id


@pytest.fixture
def asyncq_app() -> App:
    return app


def test_a_sync_view_enqueues(jobs) -> None:
    job_id = signup_view("a@x")
    assert signup_view("a@x") == job_id  # the key: once
    jobs.assert_enqueued(welcome, payload=Signup("a@x"), count=1)
    assert app.sync.get_job(job_id).info().state is JobState.QUEUED
    assert jobs.run_until_idle_sync() == 1
    assert app.sync.get_job(job_id, welcome).result(timeout=5) == "welcome a@x"


def test_each_sync_test_has_a_fresh_store(jobs) -> None:
    jobs.assert_not_enqueued(welcome)
    signup_view("b@x")
    jobs.assert_enqueued(welcome, count=1)
