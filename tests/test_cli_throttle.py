"""``asyncq enqueue --key-ttl/--debounce`` on every backend, through the command itself."""

from __future__ import annotations

import json

import msgspec
import pytest

from asyncq.backends.base import Backend
from ops_app import asyncq

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lent")]

APP = "ops_app:app"


async def test_enqueue_debounce_replaces_the_pending_job(lent: Backend) -> None:
    args = ["enqueue", APP, "note", "--key", "k1", "--debounce", "1h", "--json"]
    first = json.loads((await asyncq(*args[:3], '{"text": "one"}', *args[3:])).stdout)
    assert first["created"] is True
    assert first["state"] == "scheduled"
    second = json.loads((await asyncq(*args[:3], '{"text": "two"}', *args[3:])).stdout)
    assert second == {**first, "created": False}
    stored = await lent.get(first["id"])
    assert stored is not None
    assert msgspec.msgpack.decode(stored.payload) == {"text": "two"}
    assert stored.scheduled_at - stored.enqueued_at == pytest.approx(3600, abs=1)


async def test_enqueue_key_ttl_is_stored(lent: Backend) -> None:
    out = await asyncq("enqueue", APP, "note", "{}", "--key", "k2", "--key-ttl", "5m", "--json")
    assert out.exit_code == 0, out.output
    stored = await lent.get(json.loads(out.stdout)["id"])
    assert stored is not None
    assert stored.key_ttl == 300


async def test_enqueue_refuses_key_options_without_a_key(lent: Backend) -> None:
    out = await asyncq("enqueue", APP, "note", "{}", "--debounce", "5s")
    assert out.exit_code == 2
    assert "debounce= needs key=" in out.stderr
    both = await asyncq(
        "enqueue", APP, "note", "{}", "--key", "k", "--debounce", "5s", "--key-ttl", "1m"
    )
    assert both.exit_code == 2
    assert "not both" in both.stderr
    assert await lent.list_jobs() == []
