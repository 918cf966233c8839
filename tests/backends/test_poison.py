"""The shared rules of poison isolation (``asyncq.backends._poison``)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncq._records import ErrorKind, JobRecord, JobState
from asyncq.backends._poison import (
    RAW_SHOWN,
    UNREADABLE_NAME,
    Unreadable,
    describe,
    read_all,
    stand_in,
    unreadable_error,
)

DECODE = msgspec.msgpack.Decoder(JobRecord).decode
ENCODE = msgspec.msgpack.encode


def stored(job_id: str) -> tuple[str, bytes]:
    return job_id, ENCODE(JobRecord(id=job_id, name="n", queue="q", payload=b"\x90"))


def read(item: tuple[str, bytes]) -> JobRecord:
    return DECODE(item[1])


def identify(item: tuple[str, bytes]) -> tuple[str, str | None, bytes]:
    return item[0], "q", item[1]


def test_a_healthy_batch_decodes_whole() -> None:
    items = [stored(f"j{i}") for i in range(5)]
    good, bad = read_all(items, read, identify)
    assert [job.id for job in good] == [f"j{i}" for i in range(5)]
    assert bad == []


def test_one_bad_record_costs_only_itself() -> None:
    items = [stored("a"), ("b", b"\xc1garbage"), stored("c"), ("d", ENCODE({"id": 3}))]
    good, bad = read_all(items, read, identify)
    assert [job.id for job in good] == ["a", "c"]
    assert [(u.job_id, u.queue, u.raw) for u in bad] == [
        ("b", "q", b"\xc1garbage"),
        ("d", "q", ENCODE({"id": 3})),
    ]
    assert all(u.reason.startswith(("DecodeError", "ValidationError")) for u in bad)


def test_a_recursion_error_is_isolated_too() -> None:
    def deep(item: tuple[str, bytes]) -> JobRecord:
        if item[0] == "deep":
            raise RecursionError("maximum recursion depth exceeded")
        return read(item)

    good, bad = read_all([stored("a"), ("deep", b"[[[["), stored("c")], deep, identify)
    assert [job.id for job in good] == ["a", "c"]
    assert bad[0].reason == "RecursionError: maximum recursion depth exceeded"


@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=40)), max_size=30))
def test_read_all_keeps_order_and_loses_nothing(spec: list[tuple[bool, bytes]]) -> None:
    items = [
        stored(f"j{i}") if healthy else (f"j{i}", b"\xc1" + junk)
        for i, (healthy, junk) in enumerate(spec)
    ]
    good, bad = read_all(items, read, identify)
    assert [job.id for job in good] == [f"j{i}" for i, (ok, _) in enumerate(spec) if ok]
    assert [u.job_id for u in bad] == [f"j{i}" for i, (ok, _) in enumerate(spec) if not ok]


def test_the_error_names_the_job_what_to_do_and_keeps_the_raw_bytes_bounded() -> None:
    bad = Unreadable("j1", "mail", b"\x01\x02" * RAW_SHOWN, "DecodeError: truncated")
    error = unreadable_error(bad, attempt=2, at=5.0)
    assert error.kind is ErrorKind.UNDECODABLE
    assert "j1" in error.message
    assert "DecodeError: truncated" in error.message
    assert "purge" in error.message
    assert error.attempt == 2
    assert error.at == 5.0
    assert error.traceback is not None
    assert f"{2 * RAW_SHOWN} bytes (first {RAW_SHOWN} shown)" in error.traceback
    assert error.traceback.endswith((b"\x01\x02" * RAW_SHOWN)[:RAW_SHOWN].hex())


def test_a_stand_in_is_a_named_dead_job_with_the_error() -> None:
    job = stand_in(Unreadable("j1", None, b"zz", "DecodeError: x"), at=7.0)
    assert job.id == "j1"
    assert job.name == UNREADABLE_NAME
    assert job.queue == "?"
    assert job.state is JobState.DEAD
    assert job.last_error is not None
    assert job.last_error.kind is ErrorKind.UNDECODABLE
    # It encodes like any record, so --json and the CLI can show it.
    assert DECODE(ENCODE(job)) == job


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError("bad\nsecond line"), "ValueError: bad"),
        (KeyError(), "KeyError"),
        (RuntimeError("x" * 900), "RuntimeError: " + "x" * 486),
    ],
)
def test_describe_is_one_bounded_line(exc: BaseException, expected: str) -> None:
    assert describe(exc) == expected
