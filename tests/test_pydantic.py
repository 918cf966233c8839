"""Pydantic models as payloads and results: validated by the model, stored as MessagePack."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TypedDict

import anyio
import msgspec
import pytest

from asyncq import App, ConfigurationError, JobContext, JobState, ValidationError
from asyncq._codec import decode_any
from asyncq.testing import in_memory, run_until_idle

pydantic = pytest.importorskip("pydantic")


class Order(pydantic.BaseModel):
    order_id: str
    cents: int = pydantic.Field(gt=0)
    at: dt.datetime
    tags: list[str] = pydantic.Field(default_factory=list)

    @pydantic.field_validator("order_id")
    @classmethod
    def upper(cls, value: str) -> str:
        return value.upper()


class Receipt(pydantic.BaseModel):
    order_id: str
    charged: int


app = App("pyd", telemetry=False)
seen: list[object] = []


@app.job(schema=Order, name="pyd.charge")
async def charge(payload: Order, ctx: JobContext) -> Receipt:
    seen.append(payload)
    return Receipt(order_id=payload.order_id, charged=payload.cents)


AT = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.mark.anyio
async def test_a_model_round_trips_and_its_result_is_a_model() -> None:
    seen.clear()
    with anyio.fail_after(10):
        async with in_memory(app) as backend:
            handle = await charge.enqueue(Order(order_id="o-1", cents=500, at=AT))
            stored = await backend.get(handle.id)
            assert stored is not None
            # MessagePack of the JSON-mode dump: plain data, the validator applied.
            assert decode_any(stored.payload) == {
                "order_id": "O-1",
                "cents": 500,
                "at": "2026-01-02T03:04:05Z",
                "tags": [],
            }
            await run_until_idle(app)
            assert seen == [Order(order_id="O-1", cents=500, at=AT)]
            assert type(seen[0]) is Order
            result = await handle.result(timeout=5)
            assert result == Receipt(order_id="O-1", charged=500)


@pytest.mark.anyio
async def test_a_dict_is_validated_and_a_bad_payload_is_refused() -> None:
    with anyio.fail_after(10):
        async with in_memory(app) as backend:
            ok = await charge.enqueue({"order_id": "a", "cents": 1, "at": AT})  # type: ignore[arg-type]
            assert (await ok.info()).state is JobState.QUEUED
            with pytest.raises(ValidationError, match=r"pyd\.charge.*cents: Input should be"):
                await charge.enqueue(Order.model_construct(order_id="b", cents=0, at=AT))
            with pytest.raises(ValidationError, match="at: Field required"):
                await charge.enqueue({"order_id": "c", "cents": 1})  # type: ignore[arg-type]
            assert len(await backend.list_jobs()) == 1


@pytest.mark.anyio
async def test_enqueue_json_validates_through_the_model() -> None:
    with anyio.fail_after(10):
        async with in_memory(app):
            handle = await app.admin.enqueue_json(
                "pyd.charge", '{"order_id": "j", "cents": 7, "at": "2026-01-02T03:04:05Z"}'
            )
            await run_until_idle(app)
            assert await charge.get_job(handle.id).result(timeout=5) == Receipt(
                order_id="J", charged=7
            )
            with pytest.raises(ValidationError, match="cents"):
                await app.admin.enqueue_json("pyd.charge", '{"order_id": "j", "cents": -1}')


@pytest.mark.anyio
async def test_a_stored_payload_the_model_refuses_is_dead() -> None:
    with anyio.fail_after(10):
        async with in_memory(app) as backend:
            record = charge.record(Order(order_id="x", cents=1, at=AT))
            bad = msgspec.structs.replace(record, payload=msgspec.msgpack.encode({"cents": -5}))
            await backend.enqueue([bad])
            await run_until_idle(app)
            job = await backend.get(bad.id)
            assert job is not None
            assert job.state is JobState.DEAD
            assert "does not match Order" in (job.errors[-1].message if job.errors else "")


def test_dataclasses_and_typeddicts_are_schemas_too() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    class Named(TypedDict):
        name: str

    other = App("other", telemetry=False)

    @other.job(schema=Point)
    async def point(payload: Point) -> None: ...

    @other.job(schema=Named)
    async def named(payload: Named) -> None: ...

    assert point.payload_codec.decode(point.payload_codec.encode(Point(1))) == Point(1)
    assert named.payload_codec.decode(named.payload_codec.encode({"name": "n"})) == {"name": "n"}


def test_an_unsupported_schema_lists_what_is_supported() -> None:
    class Plain:
        pass

    other = App("other", telemetry=False)
    with pytest.raises(ConfigurationError, match=r"Struct, a dataclass, a TypedDict.*Pydantic"):

        @other.job(schema=Plain)
        async def plain(payload: Plain) -> None: ...
