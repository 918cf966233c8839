"""The Redis backend's scripts as one function library (``FUNCTION LOAD``, ``FCALL``).

Where the server has functions (Redis >= 7.0, Valkey >= 7.2) the backend loads
``library.library()`` and calls its functions; elsewhere, or where an ACL
denies ``FUNCTION``, it calls the scripts by ``EVALSHA``. The conformance suite
runs the functions on the real server and ``EVALSHA`` on fakeredis; these
tests cover the library itself, its reloading, and the fallback.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis

from _services import RedisServer, private_redis
from asyncq._records import JobState
from asyncq.backends.redis import RedisBackend
from asyncq.backends.redis.library import library
from asyncq.backends.redis.scripts import BODIES, PRELUDE, SCRIPTS
from asyncq.exceptions import BackendError

from . import _records as r
from ._redis import by_evalsha, opened, unique_namespace

__all__ = ["private_redis"]  # the fixture from ``_services``, where pytest looks for it

BOUND = 10.0


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _functions(client: Any, name: str) -> dict[str, list[str]]:
    """The functions of the library ``name`` on ``client``'s server, with their flags."""
    found: dict[str, list[str]] = {}
    for lib in await client.function_list(library=name):
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in _pairs(lib)}
        if _text(entry["library_name"]) != name:
            continue
        for function in entry["functions"]:
            fields = dict(_pairs(function))
            flags = fields.get(b"flags", fields.get("flags", []))
            key = _text(fields.get(b"name", fields.get("name")))
            found[key] = sorted(_text(flag) for flag in flags)
    return found


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """A RESP2 flat list of field, value (or a RESP3 map) as pairs."""
    if isinstance(reply, dict):
        return list(reply.items())
    return list(zip(reply[::2], reply[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _round(backend: RedisBackend, queues: list[str]) -> None:
    """Enqueue on ``queues``, claim, settle and count: calls alone and pipelined."""
    await backend.enqueue([r.job(queue=q) for q in queues])
    leases = [
        lease for q in queues for lease in await backend.claim([q], 1, worker="w", lease_for=30)
    ]
    assert len(leases) == len(queues)
    assert await backend.settle([r.completed(lease) for lease in leases]) == [True] * len(queues)
    for stats in await backend.stats(queues):
        assert stats.counts[JobState.COMPLETED] >= 1


# -- the library's text (no server) ------------------------------------------------------


def test_the_library_holds_a_function_per_script_and_variant() -> None:
    lib = library()
    assert re.fullmatch(r"asyncq_[0-9a-f]{12}", lib.name)
    assert lib.text.startswith(f"#!lua name={lib.name}\n")
    # Every script and its variant writing no events, under a name of the library's own
    # (function names are server-wide: another asyncq's library must not clash).
    assert set(lib.functions) == set(SCRIPTS)
    assert len(set(lib.functions.values())) == len(SCRIPTS)
    for script, function in lib.functions.items():
        assert re.fullmatch(rf"{lib.name}_\w+", function), function
        assert (script.endswith(":quiet")) == function.endswith("_quiet")
    # The name follows the text: a changed script makes another library.
    assert library() is lib


def test_the_prelude_ends_by_starting_the_call_with_fresh_state() -> None:
    # A library keeps the prelude's locals from call to call: whatever a call
    # assigns to them must be set afresh by start(), which the prelude ends by calling.
    assert PRELUDE.endswith("\nstart(KEYS[1])\n")
    top = set()
    for line in PRELUDE.splitlines():
        if match := re.match(r"local (?:function )?([\w, ]+?)\s*(?:=|\(|$)", line):
            top |= {name.strip() for name in match.group(1).split(",")}
    assigned = set()
    for line in PRELUDE.splitlines():
        match = re.match(r"\s+(\w+)(?:\[[^\]]*\])?\s*=[^=]", line)
        # (A line ending with a comma is a table's fields.)
        if match and match.group(1) in top and not line.endswith(","):
            assigned.add(match.group(1))
    start = PRELUDE[PRELUDE.index("local function start(") :]
    reset = set(re.findall(r"^\s+(\w+) = ", start, re.M)) | {"P", "K"}  # use() sets P, K
    assert assigned, "the check found no assignment at all"
    assert assigned <= reset, f"start() must reset {sorted(assigned - reset)}"
    # Each script's body may reassign none of them either (but its own locals).
    for name, (body, _) in BODIES.items():
        own = {
            name.strip()
            for names in re.findall(r"local (?:function )?([\w, ]+)", body)
            for name in names.split(",")
        }
        for line in body.splitlines():
            match = re.match(r"\s*(\w+)(?:\[[^\]]*\]|\.\w+)?\s*=[^=]", line)
            if match and match.group(1) in top - own:
                raise AssertionError(f"{name}.lua assigns the prelude's {match.group(1)}")


# -- against the server ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.parametrize("events", [False, True])
async def test_the_backend_calls_functions_where_the_server_has_them(
    redis_url: str, admin: aioredis.Redis, events: bool
) -> None:
    lib = library()
    backend = RedisBackend.from_url(redis_url, namespace=unique_namespace(), events=events)
    async with opened(backend):
        with anyio.fail_after(BOUND):
            assert backend._transport.functions
            found = await _functions(admin, lib.name)
            assert set(found) == set(lib.functions.values())
            # The scripts that only read are flagged so (the server runs them when
            # over maxmemory); the others may write, and keep to their keys' slot.
            for script, function in lib.functions.items():
                reads = BODIES[script.removesuffix(":quiet")][1]
                assert found[function] == (["no-writes"] if reads else []), script
            await _round(backend, ["a", "b"])
            page = await backend.read_events(after=None, queues=["a"], limit=100)
            assert bool(page.events) is events  # the variant writing no events, or not


@pytest.mark.anyio
@pytest.mark.redis
async def test_an_open_that_finds_the_library_loaded_does_not_load_it(
    redis_url: str, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = library().name
    with anyio.fail_after(BOUND):
        if await admin.function_list(library=name):
            await admin.function_delete(name)
        loads: list[str] = []
        for _ in range(2):
            backend = RedisBackend.from_url(redis_url, namespace=unique_namespace())
            load = backend._client.function_load

            async def counted(code: str, replace: bool = False, load: Any = load) -> Any:
                loads.append(code)
                return await load(code, replace)

            monkeypatch.setattr(backend._client, "function_load", counted)
            async with opened(backend):
                assert backend._transport.functions
                await _round(backend, ["a"])
        assert len(loads) == 1  # the first open loaded it; the second found it


@pytest.mark.anyio
@pytest.mark.redis
async def test_the_library_is_loaded_again_once_the_server_lost_it(
    redis_url: str, admin: aioredis.Redis
) -> None:
    name = library().name
    async with opened(RedisBackend.from_url(redis_url, namespace=unique_namespace())) as backend:
        with anyio.fail_after(BOUND):
            await backend.enqueue([r.job()])
            await admin.function_delete(name)
            # One function alone ("Function not found", then FUNCTION LOAD) ...
            (lease,) = await backend.claim([r.QUEUE], 1, worker="w", lease_for=30)
            await admin.function_delete(name)
            # ... and functions in a pipeline (not found in the replies, run again).
            stored = await backend.enqueue([r.job(queue="a"), r.job(queue="b")])
            assert [job.state for job in stored] == [JobState.QUEUED] * 2
            await admin.function_delete(name)
            assert await backend.settle([r.completed(lease)]) == [True]
            stats = {s.queue: s.counts for s in await backend.stats()}
            assert stats[r.QUEUE][JobState.COMPLETED] == 1
            assert stats["a"][JobState.QUEUED] == stats["b"][JobState.QUEUED] == 1
            assert backend._transport.functions
            assert name.encode() in [lib[1] for lib in await admin.function_list(library=name)]


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_server_that_denies_function_gets_the_scripts_by_evalsha(
    redis_url: str, admin: aioredis.Redis
) -> None:
    user, password = f"asyncq_t{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    await admin.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-function"],
    )
    try:
        url = redis_url.replace("redis://", f"redis://{user}:{password}@", 1)
        async with opened(RedisBackend.from_url(url, namespace=unique_namespace())) as backend:
            with anyio.fail_after(BOUND):
                assert not backend._transport.functions
                await _round(backend, ["a", "b"])
    finally:
        await admin.acl_deluser(user)


@pytest.mark.anyio
async def test_fakeredis_runs_the_functions_too() -> None:
    import fakeredis

    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    backend = RedisBackend(client, namespace=unique_namespace())
    try:
        with anyio.fail_after(BOUND):
            await backend.open()
            assert backend._transport.functions
            await _round(backend, ["a", "b", "c"])
            await client.function_delete(library().name)
            await _round(backend, ["a"])
    finally:
        await backend.close()
        await client.aclose()


@pytest.mark.anyio
@pytest.mark.redis
async def test_evalsha_is_what_the_backend_calls_when_told(redis_url: str) -> None:
    backend = by_evalsha(RedisBackend.from_url(redis_url, namespace=unique_namespace()))
    async with opened(backend):
        with anyio.fail_after(BOUND):
            assert not backend._transport.functions
            await _round(backend, ["a", "b"])


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_function_missing_again_after_loading_is_an_error(
    redis_url: str, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(RedisBackend.from_url(redis_url, namespace=unique_namespace())) as backend:
        with anyio.fail_after(BOUND):
            transport = backend._transport
            loads: list[bool] = []

            async def lost_again() -> bool:
                # A load the server forgets at once: the call is run again once, not forever.
                loads.append(True)
                return True

            with monkeypatch.context() as patched:
                patched.setattr(transport, "_load_library", lost_again)
                await admin.function_delete(library().name)
                with pytest.raises(BackendError, match="Function not found"):
                    await backend.stats([r.QUEUE])
            assert loads == [True]
            await _round(backend, ["a"])  # loaded for real this time


@pytest.mark.anyio
@pytest.mark.slow
@pytest.mark.redis
async def test_a_restart_without_persistence_loads_the_library_again(
    private_redis: RedisServer,
) -> None:
    server = private_redis
    server.argv[server.argv.index("--appendonly") + 1] = "no"  # the server forgets all
    with anyio.fail_after(30):
        await server.start()
    backend = RedisBackend.from_url(server.url, namespace=unique_namespace())
    async with opened(backend):
        with anyio.fail_after(30):
            await _round(backend, ["a"])
            await server.stop()
            await server.start()
            # Calls alone and pipelined find the library gone, load it, run again.
            await _round(backend, ["a", "b"])
            assert backend._transport.functions
