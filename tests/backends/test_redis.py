"""What only the Redis backend has: scripts, URLs, outages, its connections, round trips.

The behaviour every backend shares is in ``test_conformance.py``; these tests
run against the real server at ``ASYNCQ_TEST_REDIS_URL``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import redis.asyncio as aioredis
from anyio.abc import Process
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from _services import free_port
from asyncq._records import JobRecord, JobState, Lease
from asyncq.backends._common import mask_url as common_mask_url
from asyncq.backends.base import Retention
from asyncq.backends.redis import RedisBackend, mask_url
from asyncq.backends.redis.scripts import SCRIPTS
from asyncq.backends.redis.transport import Direct
from asyncq.exceptions import BackendUnavailable, ConfigurationError

from . import _records as r
from ._redis import by_evalsha, opened, unique_namespace
from ._waits import finished_while

BOUND = 10.0
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client for server commands (CLIENT LIST, SCRIPT FLUSH, ...)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _clients(admin: aioredis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c["name"] == name]


def _count_reads(backend: RedisBackend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs ``wait_finished`` reads (with the watch script) from now on."""
    reads: list[str] = []
    watch = backend._watch

    async def counted(queue: str, job_id: str) -> JobRecord | None:
        reads.append(job_id)
        return await watch(queue, job_id)

    monkeypatch.setattr(backend, "_watch", counted)
    return reads


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait for a state of the server (it pushes nothing to await; the caller bounds this)."""
    while not await check():  # noqa: ASYNC110
        await anyio.sleep(0.01)


# -- URLs (no server needed) -------------------------------------------------------------


def test_mask_url_is_the_one_every_store_uses() -> None:
    # Its cases (these Redis shapes among them) are in test_common.py::test_mask_url.
    assert mask_url is common_mask_url


def test_from_url_reads_user_password_and_db() -> None:
    backend = RedisBackend.from_url("valkey://alice:s3cret@10.1.2.3:6390/4", namespace="ns")
    kwargs = backend._client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.1.2.3", 6390, 4)
    assert (kwargs["username"], kwargs["password"]) == ("alice", "s3cret")
    assert kwargs["client_name"] == "asyncq:ns"
    assert backend.url == "valkey://alice:***@10.1.2.3:6390/4"
    assert "s3cret" not in repr(backend.url)


def test_from_url_takes_the_namespace_from_the_url() -> None:
    # --backend and ASYNCQ_BACKEND carry only a URL: the namespace must travel in it.
    backend = RedisBackend.from_url("redis://:pw@127.0.0.1:6379/0?namespace=shop")
    assert backend.namespace == "shop"
    assert "namespace" not in backend.url
    assert (
        RedisBackend.from_url("redis://127.0.0.1/0?namespace=shop", namespace="x").namespace == "x"
    )
    assert RedisBackend.from_url("redis://127.0.0.1/0").namespace == "asyncq"


def test_from_url_tls_unix_and_options() -> None:
    tls = RedisBackend.from_url("rediss://h/0", socket_timeout=3.0)
    assert tls._client.connection_pool.connection_class is SSLConnection
    assert tls._client.connection_pool.connection_kwargs["socket_timeout"] == 3.0
    unix = RedisBackend.from_url("unix:///tmp/redis.sock?db=2", client_name="svc")
    pool = unix._client.connection_pool
    assert pool.connection_class is UnixDomainSocketConnection
    assert (pool.connection_kwargs["path"], pool.connection_kwargs["db"]) == ("/tmp/redis.sock", 2)
    assert pool.connection_kwargs["client_name"] == "svc"


@pytest.mark.parametrize(
    ("url", "options"),
    [("redis://127.0.0.1:7000/0?cluster=true", {}), ("redis://127.0.0.1:7000", {"cluster": True})],
)
def test_from_url_cluster(url: str, options: dict[str, Any]) -> None:
    backend = RedisBackend.from_url(url, **options)
    assert isinstance(backend._client, RedisCluster)


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("memcached://h:1", {}),
        ("redis://h/0", {"namespace": "has space"}),
        ("redis://h/0", {"namespace": "a{b}"}),
        ("unix:///tmp/r.sock?cluster=true", {}),
    ],
)
def test_bad_configuration(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend.from_url(url, **kwargs)


@pytest.mark.parametrize(
    ("url", "unknown"),
    [
        ("redis://:s3cret@127.0.0.1:6379/0?bogus=1", "bogus"),
        ("redis://127.0.0.1:6379/0?namespce=shop", "namespce"),
        ("valkey://127.0.0.1/0?db=1&retention_done=60", "retention_done"),
        # redis-py passes a query option to the client it makes: TLS ones need TLS,
        # a cluster client has no pool wait of redis-py's.
        ("redis://127.0.0.1/0?ssl_ca_certs=/ca.pem", "ssl_ca_certs"),
        ("unix:///tmp/r.sock?socket_keepalive=true", "socket_keepalive"),
        ("redis://127.0.0.1:7000/0?cluster=true&timeout=5", "timeout"),
    ],
)
def test_an_unknown_url_option_is_refused_naming_the_known_ones(url: str, unknown: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"unknown option '{unknown}'") as raised:
        RedisBackend.from_url(url)
    message = str(raised.value)
    assert "known are " in message
    assert {"namespace", "cluster", "pool_timeout", "retention_dead", "socket_timeout"} <= set(
        message.rpartition("known are ")[2].split(", ")
    )
    assert "s3cret" not in message
    if "s3cret" in url:
        assert "'redis://:***@127.0.0.1:6379/0?bogus=1'" in message


def test_url_options_of_asyncq_and_of_redis_py_are_read_with_their_types() -> None:
    url = (
        "rediss://:s3cret@127.0.0.1/2?namespace=shop&pool_timeout=0.5&retention_dead=none"
        "&retention_completed=60&socket_timeout=1.5&ssl_cert_reqs=none&client_name=svc"
    )
    backend = RedisBackend.from_url(url)
    pool = backend._client.connection_pool
    assert (backend.namespace, pool.timeout) == ("shop", 0.5)
    assert backend.retention == Retention(completed=60.0, dead=None)
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["ssl_cert_reqs"], kwargs["db"]) == (1.5, "none", 2)
    assert kwargs["client_name"] == "svc"
    assert not {"namespace", "pool_timeout", "retention_dead"} & set(kwargs)
    # Keywords win over the URL's options.
    keyword = RedisBackend.from_url(url, retention_completed=5, pool_timeout=2)
    assert keyword.retention.completed == 5
    assert keyword._client.connection_pool.timeout == 2.0


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis://127.0.0.1/0?cluster=maybe", "'cluster'"),
        ("redis://127.0.0.1/0?pool_timeout=soon", "'pool_timeout'"),
        ("redis://127.0.0.1/0?retention_dead=-1", "'retention_dead'"),
    ],
)
def test_a_malformed_url_option_is_refused(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        RedisBackend.from_url(url)


def test_retention_applies_to_a_given_client_and_other_options_do_not() -> None:
    client = aioredis.Redis()
    backend = RedisBackend(client, retention=Retention(dead=1.0), retention_cancelled=None)
    assert backend.retention == Retention(dead=1.0, cancelled=None)
    assert RedisBackend(client).retention == Retention()
    with pytest.raises(ConfigurationError, match="only when a URL is given"):
        RedisBackend(client, socket_timeout=1.0)


@pytest.mark.parametrize(
    "url", ["redis://:s3cret@127.0.0.1:6379/0?bogus=1", "redis://127.0.0.1:6379/0?namespce=x"]
)
def test_the_cli_refuses_an_unknown_url_option_in_one_line(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from asyncq.cli import EXIT_USAGE, main

    name = f"redis_url_app_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text('from asyncq import App\napp = App("u")\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("ASYNCQ_BACKEND", raising=False)
    result = CliRunner().invoke(main, ["status", f"{name}:app", "--backend", url])
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: unknown option ")
    assert "known are " in line
    assert "s3cret" not in result.output


def test_the_lua_scripts_ship_in_the_package_and_each_is_loaded() -> None:
    # Read through importlib.resources, as from an installed wheel: every file of
    # lua/ is a script (or the prelude they share), and every script has its file.
    files = importlib.resources.files("asyncq.backends.redis").joinpath("lua")
    names = {f.name.removesuffix(".lua") for f in files.iterdir() if f.name.endswith(".lua")}
    # Each script also has a variant writing no job events (``events=False``).
    loud = {name for name in SCRIPTS if not name.endswith(":quiet")}
    assert set(SCRIPTS) == loud | {f"{name}:quiet" for name in loud}
    assert names == {*loud, "prelude"}
    prelude = files.joinpath("prelude.lua").read_text(encoding="utf-8")
    assert prelude.count("local EV = true\n") == 1
    for name in loud:
        body = files.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        assert SCRIPTS[name] == f"\n{prelude}\n{body}"
        quiet = prelude.replace("local EV = true\n", "local EV = false\n")
        assert SCRIPTS[f"{name}:quiet"] == f"\n{quiet}\n{body}"


def test_client_must_return_bytes() -> None:
    client = aioredis.Redis(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisBackend(client)


# -- against the server ------------------------------------------------------------------


@pytest.mark.anyio
async def test_unreachable_server_is_backend_unavailable_with_the_url_masked() -> None:
    backend = RedisBackend.from_url(
        "redis://alice:s3cret@127.0.0.1:1/0", namespace=unique_namespace()
    )
    with anyio.fail_after(BOUND):
        for call in (backend.open(), backend.enqueue([r.job()]), backend.get("nope")):
            with pytest.raises(BackendUnavailable) as info:
                await call
            assert "redis://alice:***@127.0.0.1:1/0" in str(info.value)
            assert "s3cret" not in str(info.value)
        await backend.close()


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.parametrize("events", [False, True])
async def test_a_backend_loads_only_the_script_variants_it_calls(
    redis_url: str, admin: aioredis.Redis, events: bool
) -> None:
    # By EVALSHA, as on a server without functions (its library holds both variants).
    def sha(name: str) -> str:
        return hashlib.sha1(SCRIPTS[name].encode()).hexdigest()  # the id Redis gives it

    await admin.script_flush()
    backend = RedisBackend.from_url(redis_url, namespace=unique_namespace(), events=events)
    async with opened(by_evalsha(backend)):
        with anyio.fail_after(BOUND):
            used, other = ("enqueue", "enqueue:quiet") if events else ("enqueue:quiet", "enqueue")
            assert await admin.script_exists(sha(used), sha(other)) == [True, False]
            # Switched after open, the other variant is loaded on its first call.
            backend.events = not events
            [stored] = await backend.enqueue([r.job()])
            assert stored.state is JobState.QUEUED
            assert await admin.script_exists(sha(other)) == [True]


@pytest.mark.anyio
@pytest.mark.redis
async def test_scripts_are_loaded_again_after_script_flush(
    redis_url: str, admin: aioredis.Redis
) -> None:
    # By EVALSHA; test_redis_functions.py has the same for the function library.
    backend = by_evalsha(RedisBackend.from_url(redis_url, namespace=unique_namespace()))
    async with opened(backend):
        with anyio.fail_after(BOUND):
            await backend.enqueue([r.job()])
            await admin.script_flush()
            # One script alone (EVALSHA, then SCRIPT LOAD on NOSCRIPT) ...
            (lease,) = await backend.claim([r.QUEUE], 1, worker="w", lease_for=30)
            await admin.script_flush()
            # ... and scripts in a pipeline (NOSCRIPT in the replies, run again).
            stored = await backend.enqueue([r.job(queue="a"), r.job(queue="b")])
            assert [job.state for job in stored] == [JobState.QUEUED] * 2
            await admin.script_flush()
            assert await backend.settle([r.completed(lease)]) == [True]
            stats = {s.queue: s.counts for s in await backend.stats()}
            assert stats[r.QUEUE][JobState.COMPLETED] == 1
            assert stats["a"][JobState.QUEUED] == stats["b"][JobState.QUEUED] == 1


@pytest.mark.anyio
@pytest.mark.redis
async def test_survives_client_kill(redis_url: str, admin: aioredis.Redis) -> None:
    ns = unique_namespace()
    async with opened(RedisBackend.from_url(redis_url, namespace=ns)) as backend:
        with anyio.fail_after(BOUND):
            await backend.enqueue([r.job(), r.job()])
            first, second = await backend.claim([r.QUEUE], 2, worker="w", lease_for=30)
            finished: list[JobRecord | None] = []
            woken = anyio.Event()

            async def wait() -> None:
                finished.append(await backend.wait_finished(first.job.id))

            async def idle() -> None:
                await backend.wait_for_work(["elsewhere"], 5)
                woken.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                tg.start_soon(idle)
                # Until the subscription and the blocking pop are both in place.

                async def in_place() -> bool:
                    subs = await _clients(admin, f"asyncq:{ns}:sub")
                    blocked = await _clients(admin, f"asyncq:{ns}:block")
                    return any(c["sub"] == "1" for c in subs) and any(
                        c["cmd"] == "blpop" for c in blocked
                    )

                await _until(in_place)
                killed = 0
                for role in ("", ":sub", ":block"):
                    for client in await _clients(admin, f"asyncq:{ns}{role}"):
                        killed += await admin.client_kill_filter(_id=client["id"])
                assert killed >= 3
                # The next calls work (redis-py reconnects) ...
                assert (await backend.get(second.job.id)) is not None
                assert await backend.settle([r.completed(first)]) == [True]
                # ... the blocked claimer, its pop cut short, returns (or is woken) ...
                await backend.enqueue([r.job(queue="elsewhere")])
                await woken.wait()
            # ... and the waiter, resubscribed, heard of the completion (or read it again).
            (record,) = finished
            assert record is not None
            assert record.state is JobState.COMPLETED


@pytest.mark.anyio
@pytest.mark.redis
async def test_one_subscriber_connection_for_fifty_waiters(
    redis_url: str, admin: aioredis.Redis
) -> None:
    ns = unique_namespace()
    sub_name = f"asyncq:{ns}:sub"
    async with opened(RedisBackend.from_url(redis_url, namespace=ns)) as backend:
        with anyio.fail_after(BOUND):
            jobs = [r.job(queue=f"q{i % 2}") for i in range(50)]
            await backend.enqueue(jobs)
            leases = await backend.claim(["q0", "q1"], 50, worker="w", lease_for=30)
            done: list[JobState] = []

            async def wait(job_id: str) -> None:
                record = await backend.wait_finished(job_id)
                assert record is not None
                done.append(record.state)

            async with anyio.create_task_group() as tg:
                for job in jobs:
                    tg.start_soon(wait, job.id)

                async def subscribed() -> bool:
                    return any(c["sub"] == "2" for c in await _clients(admin, sub_name))

                await _until(subscribed)
                notices = backend._get_notices()

                async def all_waiting() -> bool:
                    return notices.waiters == len(jobs)

                await _until(all_waiting)
                assert len(await _clients(admin, sub_name)) == 1
                assert await backend.settle([r.completed(lease) for lease in leases]) == [True] * 50
            assert done == [JobState.COMPLETED] * 50
            assert len(await _clients(admin, sub_name)) == 1


@pytest.mark.anyio
@pytest.mark.redis
async def test_blocking_wait_does_not_take_a_pool_connection(
    redis_url: str, admin: aioredis.Redis
) -> None:
    backend = RedisBackend.from_url(redis_url, namespace=unique_namespace(), max_connections=1)
    async with opened(backend):
        with anyio.fail_after(BOUND):
            woke = anyio.Event()

            async def idle() -> None:
                await backend.wait_for_work([r.QUEUE], 5)
                woke.set()

            async def blocked() -> bool:
                clients = await _clients(admin, f"{backend._name}:block")
                return any("b" in c["flags"] for c in clients)  # blocked in its BLPOP

            async with anyio.create_task_group() as tg:
                tg.start_soon(idle)
                await _until(blocked)
                # The one pooled connection is free for everything else meanwhile.
                for _ in range(5):
                    await backend.stats([r.QUEUE])
                started = time.monotonic()
                await backend.enqueue([r.job()])
                await woke.wait()
            assert time.monotonic() - started < 0.5


class _Counting(aioredis.Connection):
    """Counts round trips through redis-py: one per command, or per pipeline."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        _Counting.writes += 1
        await super().send_packed_command(command, check_health)


@pytest.mark.anyio
@pytest.mark.redis
async def test_batches_cost_one_round_trip(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exchange = Direct._exchange

    async def counted(self: Direct, commands: Any) -> list[Any]:
        _Counting.writes += 1  # the backend's own connections: one exchange, one round trip
        return await exchange(self, commands)

    monkeypatch.setattr(Direct, "_exchange", counted)
    pool = aioredis.ConnectionPool.from_url(redis_url, connection_class=_Counting)
    client = aioredis.Redis.from_pool(pool)
    backend = RedisBackend(client, namespace=unique_namespace())
    try:
        async with opened(backend):
            with anyio.fail_after(BOUND):
                n = 100
                jobs = [r.job(queue=("a", "b", "c")[i % 3]) for i in range(n)]
                trips: dict[str, int] = {}

                async def count(what: str, call: Any) -> Any:
                    before = _Counting.writes
                    result = await call
                    trips[what] = _Counting.writes - before
                    return result

                await count("enqueue", backend.enqueue(jobs))
                leases = await count(
                    "claim", backend.claim(["a", "b", "c"], n, worker="w", lease_for=30)
                )
                assert len(leases) == n
                await count("heartbeat", backend.heartbeat(leases, lease_for=30))
                applied = await count("settle", backend.settle([r.completed(x) for x in leases]))
                assert applied == [True] * n
                await count("stats", backend.stats(["a", "b", "c"]))
            # Same-slot queues: one script per queue, all in one pipeline (claim: one script).
            assert trips == {"enqueue": 1, "claim": 1, "heartbeat": 1, "settle": 1, "stats": 1}
    finally:
        await client.aclose()


@pytest.mark.anyio
@pytest.mark.slow
async def test_works_again_after_the_server_restarts(tmp_path: Path) -> None:
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: integration tests must run)")
        pytest.skip("redis-server is not installed (apt install redis-server)")
    port = free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    # The append-only file keeps the jobs across the restart.
    argv += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    url = f"redis://127.0.0.1:{port}/0"

    async def start() -> Process:
        proc = await anyio.open_process(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = aioredis.Redis.from_url(url)
        try:
            while True:
                with contextlib.suppress(aioredis.ConnectionError):
                    if await probe.ping():
                        return proc
                await anyio.sleep(0.05)
        finally:
            await probe.aclose()

    proc = await start()
    try:
        async with opened(RedisBackend.from_url(url, namespace=unique_namespace())) as backend:
            with anyio.fail_after(30):
                await backend.enqueue([r.job()])
                (lease,) = await backend.claim([r.QUEUE], 1, worker="w", lease_for=60)
                finished: list[JobRecord | None] = []

                async def wait() -> None:
                    finished.append(await backend.wait_finished(lease.job.id))

                notices = backend._get_notices()
                channel = backend._prefix(r.QUEUE) + "done"

                async def waiting() -> bool:
                    return notices.waiters == 1 and notices.listening(channel) is not None

                async with anyio.create_task_group() as tg:
                    tg.start_soon(wait)
                    await _until(waiting)
                    proc.terminate()
                    await proc.wait()
                    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{port}"):
                        await backend.stats([r.QUEUE])
                    proc = await start()
                    assert await backend.settle([r.completed(lease)]) == [True]
                (record,) = finished
                assert record is not None
                assert record.state is JobState.COMPLETED
    finally:
        proc.terminate()
        await proc.wait()


# -- the key layout ------------------------------------------------------------------------


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
async def layout_backend(request: pytest.FixtureRequest) -> AsyncIterator[RedisBackend]:
    """A backend on fakeredis and on the real server, for checks of what the scripts store."""
    if request.param == "fakeredis":
        import fakeredis

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        backend = RedisBackend(client, namespace=unique_namespace())
        await backend.open()
        try:
            yield backend
        finally:
            await backend.close()
            await client.aclose()
    else:
        redis_url = request.getfixturevalue("redis_url")
        async with opened(
            RedisBackend.from_url(redis_url, namespace=unique_namespace())
        ) as backend:
            yield backend


async def _states_as_stored(backend: RedisBackend, queue: str) -> dict[JobState, int]:
    """Counts by state from the job hashes themselves (a scan: tests only)."""
    counts = dict.fromkeys(JobState, 0)
    async for key in backend._client.scan_iter(match=f"{backend._prefix(queue)}j:*", count=1000):
        counts[JobState((await backend._client.hget(key, "st")).decode())] += 1
    return counts


@pytest.mark.anyio
async def test_counts_stay_exact_through_every_transition(layout_backend: RedisBackend) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(max_attempts=2) for _ in range(12)])
        await backend.enqueue([r.job(delay=600), r.job(delay=600), r.job(key="k")])
        await backend.enqueue([r.job(key="k")])  # held: not stored, not counted
        leases = await backend.claim([r.QUEUE], 9, worker="w", lease_for=30)
        done, fail, dead, cancel, back = (
            leases[:3],
            leases[3:4],
            leases[4:5],
            leases[5:6],
            leases[6:7],
        )
        outcomes = [r.completed(x) for x in done] + [r.failed(fail[0], time.time() - 1)]
        outcomes += [r.dead(dead[0]), r.cancelled(cancel[0]), r.handed_back(back[0])]
        assert await backend.settle(outcomes) == [True] * 7
        # Two leases left: one lapses (recovered), one has its cancellation asked for.
        lapsing, asked = leases[7], leases[8]
        assert await backend.cancel(asked.job.id) is not None
        await backend.heartbeat([lapsing], lease_for=0.001)
        await anyio.sleep(0.01)
        assert await backend.recover() == 1
        queued = await backend.list_jobs(state=JobState.QUEUED, limit=1)
        await backend.cancel(queued[0].id)
        await backend.retry_dead([dead[0].job.id])
        await backend.claim([r.QUEUE], 2, worker="w", lease_for=30)  # promotes the due retry
        await backend.purge(states=[JobState.CANCELLED], older_than=time.time() + 1)
        (stats,) = await backend.stats([r.QUEUE])
        assert stats.counts == await _states_as_stored(backend, r.QUEUE)
        assert sum(stats.counts.values()) == 15 - 2  # two cancelled jobs purged


@pytest.mark.anyio
async def test_listing_by_state_from_a_small_index_or_by_walking_every_job(
    layout_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(name=("a", "b")[i % 2]) for i in range(10)])
        leases = await backend.claim([r.QUEUE], 10, worker="w", lease_for=30)
        outcomes = [r.dead(x) if i % 3 == 0 else r.completed(x) for i, x in enumerate(leases)]
        await backend.settle(outcomes)
        dead = sorted(x.job.id for i, x in enumerate(leases) if i % 3 == 0)
        dead_b = sorted(x.job.id for i, x in enumerate(leases) if i % 3 == 0 and x.job.name == "b")
        for most in (5000, 2):  # the index read whole (4 dead), or too big for that
            monkeypatch.setattr("asyncq.backends.redis.admin._GATHER_MAX", most)
            listed = await backend.list_jobs(state=JobState.DEAD)
            assert [job.id for job in listed] == dead
            assert all(job.state is JobState.DEAD for job in listed)
            first = await backend.list_jobs(state=JobState.DEAD, limit=3)
            rest = await backend.list_jobs(state=JobState.DEAD, after=first[-1].id)
            assert [job.id for job in first + rest] == dead
            named = await backend.list_jobs(state=JobState.DEAD, name="b")
            assert [job.id for job in named] == dead_b
            assert len(await backend.list_jobs(state=JobState.COMPLETED)) == 6


@pytest.mark.anyio
async def test_finished_jobs_show_no_lease(layout_backend: RedisBackend) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(max_attempts=3), r.job()])
        first, second = await backend.claim([r.QUEUE], 2, worker="w", lease_for=30)
        await backend.settle([r.failed(first, time.time() + 60), r.completed(second)])
        for lease in (first, second):
            stored = await backend.get(lease.job.id)
            assert stored is not None
            assert (stored.worker, stored.lease_expires_at) == (None, None)


@pytest.mark.anyio
async def test_a_long_batch_goes_in_chunks_and_a_replay_stores_nothing_twice(
    layout_backend: RedisBackend,
) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        jobs = [r.job(queue=("a", "b")[i % 2]) for i in range(2500)]
        stored = await backend.enqueue(jobs)
        assert [job.id for job in stored] == [job.id for job in jobs]
        assert {job.state for job in stored} == {JobState.QUEUED}
        # The same records again (a producer retrying after a lost reply): found, not stored.
        again = await backend.enqueue([*jobs[:10], r.job(queue="a")])
        assert [job.id for job in again[:10]] == [job.id for job in jobs[:10]]
        assert again[10].state is JobState.QUEUED
        counts = {s.queue: s.counts[JobState.QUEUED] for s in await backend.stats(["a", "b"])}
        assert counts == {"a": 1251, "b": 1250}
        claimed = await backend.claim(["a"], 2000, worker="w", lease_for=30)
        ids = [lease.job.id for lease in claimed]
        assert ids[:1250] == [job.id for job in jobs if job.queue == "a"]


# -- fewer round trips ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_settle_and_claim_is_settle_then_claim_in_one_call(
    layout_backend: RedisBackend,
) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(queue=q) for q in ("a", "b", "a", "b", "a")])
        done, back, refused = await backend.claim(["a", "b"], 3, worker="w", lease_for=30)
        bad = msgspec.structs.replace(r.completed(done), state=JobState.ACTIVE)
        with pytest.raises(ValueError, match="not an outcome"):
            await backend.settle_and_claim([bad], ["a"], 1, worker="w", lease_for=30)
        outcomes = [r.completed(done), r.handed_back(back), r.completed(r.forged(refused))]
        applied, leases = await backend.settle_and_claim(
            outcomes, ["a", "b"], 10, worker="w2", lease_for=30
        )
        assert applied == [True, True, False]
        # The job handed back is ready again for the claim of the same call.
        assert back.job.id in {lease.job.id for lease in leases}
        assert len(leases) == 3
        assert {lease.job.worker for lease in leases} == {"w2"}
        assert await backend.settle([r.completed(x) for x in leases]) == [True] * 3
        stats = {s.queue: s.counts for s in await backend.stats(["a", "b"])}
        assert stats["a"][JobState.COMPLETED] + stats["b"][JobState.COMPLETED] == 4
        assert stats["a"][JobState.ACTIVE] + stats["b"][JobState.ACTIVE] == 1  # refused
        # A limit of 0 only settles.
        assert await backend.settle_and_claim(
            [r.completed(refused)], ["a", "b"], 0, worker="w", lease_for=30
        ) == ([True], [])


@pytest.mark.anyio
async def test_a_notice_carries_the_job_and_only_waited_jobs_send_one(
    layout_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(), r.job()])
        quiet, waited = await backend.claim([r.QUEUE], 2, worker="w", lease_for=30)
        reads = _count_reads(backend, monkeypatch)
        pubsub = backend._client.pubsub()
        await pubsub.subscribe(backend._prefix(r.QUEUE) + "done")
        try:
            got: list[JobRecord | None] = []
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    got.append(await backend.wait_finished(waited.job.id))

                tg.start_soon(wait)
                while not reads:  # noqa: ASYNC110 - until the waiter has marked the job
                    await anyio.sleep(0.01)
                await backend.settle([r.completed(quiet), r.completed(waited, b"\xa3yes")])
            (record,) = got
            assert record is not None
            assert (record.state, record.result) == (JobState.COMPLETED, b"\xa3yes")
            assert reads == [waited.job.id]  # read once, before the end: the notice had it
            # The job nobody waited for published nothing: the first message is the other's.
            while (message := await pubsub.get_message(timeout=1)) is not None:
                if message["type"] == "message":
                    assert waited.job.id.encode() in message["data"]
                    assert quiet.job.id.encode() not in message["data"]
                    break
            else:
                raise AssertionError("no notice")
        finally:
            await pubsub.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("order", ["wait first", "end first"])
async def test_a_job_stored_as_waited_for_is_not_read_by_its_waiter(
    layout_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    backend = layout_backend
    reads = _count_reads(backend, monkeypatch)
    with anyio.fail_after(BOUND):
        for _ in range(3):
            (job,) = await backend.enqueue_waited([r.job()])
            (lease,) = await backend.claim([r.QUEUE], 1, worker="w", lease_for=30)

            async def end(lease: Lease = lease) -> None:
                assert await backend.settle([r.completed(lease, b"\xa3yes")]) == [True]

            if order == "wait first":
                record = await finished_while(backend, job.id, end)
            else:
                await end()
                record = await backend.wait_finished(job.id)
            assert record is not None
            assert (record.id, record.state, record.result) == (
                job.id,
                JobState.COMPLETED,
                b"\xa3yes",
            )
    # The notice told every waiter: none of them read its job.
    assert reads == []


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_channel_stays_subscribed_a_while_after_its_last_waiter(
    redis_url: str, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncq.backends.redis import notices

    async with opened(RedisBackend.from_url(redis_url, namespace=unique_namespace())) as backend:
        a, b = backend._prefix("a") + "done", backend._prefix("b") + "done"

        async def subscribers(channel: str) -> int:
            ((_, count),) = await admin.pubsub_numsub(channel)
            return int(count)

        async def round_trip(queue: str) -> None:
            (job,) = await backend.enqueue_waited([r.job(queue=queue)])
            (lease,) = await backend.claim([queue], 1, worker="w", lease_for=30)
            await backend.settle([r.completed(lease)])
            finished = await backend.wait_finished(job.id)
            assert finished is not None
            assert finished.state is JobState.COMPLETED

        with anyio.fail_after(BOUND):
            await round_trip("a")
            await round_trip("a")
            assert await subscribers(a) == 1  # kept between the two waits, and after
            monkeypatch.setattr(notices, "LINGER", 0.0)
            await round_trip("b")
            # The next wait let go of the channel nobody needed any more.
            await _until(lambda: _equals(subscribers(a), 0))
            assert await subscribers(b) == 1


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_waited_job_is_read_again_after_the_subscription_was_lost(
    redis_url: str, admin: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = unique_namespace()
    async with opened(RedisBackend.from_url(redis_url, namespace=ns)) as backend:
        reads = _count_reads(backend, monkeypatch)
        with anyio.fail_after(BOUND):
            (job,) = await backend.enqueue_waited([r.job()])
            (lease,) = await backend.claim([r.QUEUE], 1, worker="w", lease_for=30)

            async def end() -> None:
                # The subscriber connection goes; the end is published while it is away.
                for client in await _clients(admin, f"asyncq:{ns}:sub"):
                    await admin.client_kill_filter(_id=client["id"])
                assert await backend.settle([r.completed(lease)]) == [True]

            record = await finished_while(backend, job.id, end)
            # The waiter, subscribed anew, read the job rather than wait for the lost notice.
            assert record is not None
            assert record.state is JobState.COMPLETED
            assert reads == [job.id]


@pytest.mark.anyio
async def test_waiting_right_after_a_short_claim_needs_no_peek(
    layout_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = layout_backend
    calls: list[str] = []
    many = backend._many

    async def counted(calls_: Any, before: Any = ()) -> list[Any]:
        made = list(calls_)
        calls.extend(name for name, _, _ in made)
        return await many(made, before)

    monkeypatch.setattr(backend, "_many", counted)
    with anyio.fail_after(BOUND):
        await backend.enqueue([r.job(delay=0.3)])
        assert await backend.claim([r.QUEUE], 5, worker="w", lease_for=30) == []
        started = time.monotonic()
        await backend.wait_for_work([r.QUEUE], 5)  # until the delayed job is due
        assert 0.2 < time.monotonic() - started < 2
        assert "peek" not in calls
        (lease,) = await backend.claim([r.QUEUE], 1, worker="w", lease_for=30)
        # Without a short claim just before, it peeks: a ready job returns at once.
        await backend.enqueue([r.job()])
        await backend.wait_for_work([r.QUEUE], 5)
        assert calls.count("peek") == 1
        assert await backend.settle([r.completed(lease)]) == [True]


@contextlib.asynccontextmanager
async def _own_server(tmp_path: Path) -> AsyncIterator[str]:
    """A redis-server of this test's own (it gets paused), on a free port."""
    server = shutil.which("redis-server")
    if server is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: integration tests must run)")
        pytest.skip("redis-server is not installed (apt install redis-server)")
    port = free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = await anyio.open_process([*argv, "--save", ""], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    probe = aioredis.Redis.from_url(url)
    try:
        while True:
            with contextlib.suppress(aioredis.ConnectionError):
                if await probe.ping():
                    break
            await anyio.sleep(0.05)
        yield url
    finally:
        await probe.aclose()
        proc.terminate()
        await proc.wait()


@pytest.mark.anyio
@pytest.mark.slow
async def test_the_own_connection_times_out_and_survives_a_cancelled_call(
    tmp_path: Path,
) -> None:
    async with _own_server(tmp_path) as url:
        admin = aioredis.Redis.from_url(url)
        backend = RedisBackend.from_url(url, namespace=unique_namespace(), socket_timeout=0.3)
        try:
            async with opened(backend):
                with anyio.fail_after(BOUND):
                    (stored,) = await backend.enqueue([r.job()])
                    # A script that may write (stats promotes due jobs) waits while
                    # the server pauses writes; CLIENT does not.
                    await admin.client_pause(8000, all=False)
                    # A call cancelled while its reply is pending ...
                    with anyio.move_on_after(0.1):
                        await backend.stats([r.QUEUE])
                    await admin.client_unpause()
                    # ... leaves no reply behind for the next call to read as its own.
                    (stats,) = await backend.stats([r.QUEUE])
                    assert stats.counts[JobState.QUEUED] == 1
                    await admin.client_pause(8000, all=False)
                    # Calls that outlast the socket timeout (and its retries) give up.
                    with pytest.raises(BackendUnavailable, match=r"no answer within 0\.3s"):
                        await backend.stats([r.QUEUE])
                    await admin.client_unpause()
                    got = await backend.get(stored.id)
                    assert got is not None
                    assert got.id == stored.id
        finally:
            await admin.aclose()


@pytest.mark.anyio
async def test_a_namespace_of_another_key_layout_is_refused(
    layout_backend: RedisBackend,
) -> None:
    backend = layout_backend
    with anyio.fail_after(BOUND):
        key = f"{{{backend.namespace}}}:layout"
        assert await backend._client.get(key) == b"2"
        await backend._client.set(key, "1")
        other = RedisBackend(backend._client, namespace=backend.namespace)
        with pytest.raises(ConfigurationError, match="key layout 1"):
            await other.open()
        await backend._client.set(key, "2")


class _Item(msgspec.Struct):
    n: int


async def _noop(item: _Item) -> None:
    return None


@pytest.mark.anyio
async def test_a_batch_without_caller_ids_skips_the_other_queue_look_and_one_with_them_does_not(
    redis_url: str,
) -> None:
    # ``enqueue_many`` tells the store whether its ids are fresh; a fresh batch
    # skips reading the id index, a batch with a caller's id still finds the
    # job that id names in another queue.
    from asyncq import App

    backend = RedisBackend.from_url(redis_url, namespace=unique_namespace())
    app = App("fresh", backend=backend)
    in_a = app.job(schema=_Item, name="in-a", queue="a")(_noop)
    in_b = app.job(schema=_Item, name="in-b", queue="b")(_noop)
    reads: list[str] = []
    run_many = backend._many

    async def spied(calls: Any, before: Any = ()) -> Any:
        calls = list(calls)
        reads.extend(call[2][2] for call in calls if call[0] == "enqueue")
        return await run_many(calls, before)

    backend._many = spied  # type: ignore[method-assign]
    try:
        with anyio.fail_after(BOUND):
            async with app:
                await in_a.enqueue(_Item(0), id="order-42")
                plain = await in_b.enqueue_many([_Item(1), _Item(2)])
                named = await in_b.enqueue_many([(_Item(3), {"id": "order-42"}), _Item(4)])
                assert [h.created for h in plain] == [True, True]
                assert [h.created for h in named] == [False, True]
                assert (await app.get_job("order-42").info()).queue == "a"
    finally:
        await backend.drop()
    assert reads[-2:] == ["f", ""]
