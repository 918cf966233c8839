"""The parts of redis-py (and hiredis) that the Redis backend's own connections read.

``transport.Direct`` lets redis-py open a connection, then writes to and reads
from its streams itself; ``side_client`` copies a pool's settings into a pool
of its own. Both lean on attributes redis-py does not promise to keep. Each
test here pins one of them and, on a redis-py that changed it, fails naming
what changed and where asyncq reads it, rather than letting the backend break
at run time.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import hiredis
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.exceptions import InvalidResponse, ResponseError

from asyncq.backends.redis.client import _POOL_ONLY
from asyncq.backends.redis.transport import Direct

BOUND = 10.0
WHERE = "asyncq/backends/redis/transport.py, client.py"

#: the settings a pool keeps for its connections, as redis-py 8.2 names them, that
#: ``Direct`` and ``side_client`` may copy into connections of their own
KNOWN_SETTINGS = frozenset(
    {
        "client_name",
        "credential_provider",
        "db",
        "decode_responses",
        "driver_info",
        "encoding",
        "encoding_errors",
        "health_check_interval",
        "himport_registry",
        "host",
        "legacy_responses",
        "lib_name",
        "lib_version",
        "maint_notifications_config",
        "password",
        "path",
        "port",
        "protocol",
        "redis_connect_func",
        "retry",
        "retry_on_error",
        "retry_on_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_read_size",
        "socket_timeout",
        "socket_type",
        "username",
    }
)


def _changed(what: str, used: str) -> str:
    return f"redis-py {redis.__version__} changed {what}; asyncq reads it in {used} ({WHERE})"


#: clients of every connection class the backend meets (none connects here)
CLIENTS: dict[str, Callable[[], aioredis.Redis]] = {
    "args": lambda: aioredis.Redis(host="127.0.0.1", port=6379, client_name="pin"),
    "redis": lambda: aioredis.Redis.from_url("redis://u:secret@127.0.0.1:6379/2?socket_timeout=1"),
    "rediss": lambda: aioredis.Redis.from_url("rediss://127.0.0.1:6380/0?ssl_cert_reqs=none"),
    "unix": lambda: aioredis.Redis.from_url("unix:///tmp/asyncq-pin.sock?db=1"),
}


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_pool_tells_its_connection_class_and_settings(kind: str) -> None:
    client = CLIENTS[kind]()
    pool = getattr(client, "connection_pool", None)
    assert pool is not None, _changed("Redis.connection_pool", "Direct")
    kwargs = getattr(pool, "connection_kwargs", None)
    assert isinstance(kwargs, dict), _changed("ConnectionPool.connection_kwargs", "Direct")
    cls = getattr(pool, "connection_class", None)
    assert isinstance(cls, type), _changed("ConnectionPool.connection_class", "Direct")
    assert issubclass(cls, AbstractConnection), _changed(
        f"the connection classes ({cls.__name__} is no AbstractConnection)", "Direct"
    )
    new = {k for k in kwargs if k not in KNOWN_SETTINGS and k not in _POOL_ONLY} - {
        k for k in kwargs if k.startswith("ssl_")
    }
    assert not new, _changed(
        f"a pool's connection_kwargs: new {sorted(new)}",
        "Direct and side_client, which copy them into connections of their own (a setting "
        "that belongs to one pool goes in _POOL_ONLY, any other in KNOWN_SETTINGS here)",
    )


@pytest.mark.parametrize("kind", ["args", "redis", "rediss"])
def test_a_connection_made_from_a_pools_settings_has_its_streams(kind: str) -> None:
    # Over TCP (a unix socket's connection is no Connection: its calls take the pool).
    client = CLIENTS[kind]()
    assert issubclass(client.connection_pool.connection_class, Connection), _changed(
        "the TCP connection classes (no asyncio Connection)", "Direct.usable"
    )
    # Direct.usable makes this probe; without the two streams it falls back to the pool.
    assert Direct.usable(client), _changed(
        "the connection's private stream attributes (_reader, _writer)", "Direct.usable"
    )
    direct = Direct(client, "pin")
    conn: Any = direct._conn
    for name in ("is_connected", "connect", "disconnect", "retry"):
        assert hasattr(conn, name), _changed(f"AbstractConnection.{name}", "Direct")
    assert "nowait" in inspect.signature(conn.disconnect).parameters, _changed(
        "AbstractConnection.disconnect(nowait=)", "Direct._drop"
    )
    assert callable(getattr(conn.retry, "call_with_retry", None)), _changed(
        "Retry.call_with_retry", "Direct.call"
    )


def test_hiredis_packs_commands_and_reads_replies_as_direct_expects() -> None:
    packed = hiredis.pack_command(("EVALSHA", "0" * 40, 1, "k", b"\x00", 7))
    assert packed == b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"0" * 40 + (
        b"\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\n\x00\r\n$1\r\n7\r\n"
    ), "hiredis.pack_command changed what it writes (Direct._exchange sends it as is)"
    reader = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
    reader.feed(b"-NOSCRIPT No matching script\r\n*2\r\n:1\r\n$-1\r\n")
    error = reader.gets()
    assert isinstance(error, ResponseError), "hiredis.Reader(replyError=) no longer applies"
    assert str(error).startswith("NOSCRIPT"), "hiredis error replies lost their text"
    assert reader.gets() == [1, None]
    assert reader.gets() is False, "hiredis.Reader.gets() no longer answers False for 'more'"
    assert isinstance(hiredis.PushNotification, type), "hiredis.PushNotification is gone"


def test_a_cluster_client_tells_its_nodes_and_their_settings() -> None:
    client = RedisCluster.from_url("redis://127.0.0.1:7000")  # does not connect
    assert callable(getattr(client, "get_connection_kwargs", None)), _changed(
        "RedisCluster.get_connection_kwargs", "pool_kwargs"
    )
    startup = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
    assert isinstance(startup, dict), _changed(
        "RedisCluster.nodes_manager.startup_nodes", "describe"
    )
    node = next(iter(startup.values()))
    assert isinstance(node, ClusterNode)
    for name in ("connection_class", "connection_kwargs", "name", "host", "port"):
        assert hasattr(node, name), _changed(f"ClusterNode.{name}", "side_client and describe")
    for name in ("get_node_from_key", "get_default_node"):
        assert callable(getattr(client, name, None)), _changed(
            f"RedisCluster.{name}", "Transport.block and the notices' subscriber"
        )


@pytest.mark.anyio
@pytest.mark.redis
async def test_a_connected_connection_exposes_asyncio_streams(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    name = f"pin-{uuid.uuid4().hex[:8]}"
    direct = Direct(client, name)
    try:
        with anyio.fail_after(BOUND):
            await direct.connect()
            conn: Any = direct._conn
            assert conn.is_connected
            assert isinstance(conn._reader, asyncio.StreamReader), _changed(
                "AbstractConnection._reader (no asyncio.StreamReader once connected)",
                "Direct._exchange",
            )
            assert isinstance(conn._writer, asyncio.StreamWriter), _changed(
                "AbstractConnection._writer (no asyncio.StreamWriter once connected)",
                "Direct._exchange",
            )
            # redis-py's connect() did the handshake (here: the client name) ...
            names = [c["name"] for c in await client.client_list()]
            assert name in names, _changed("what Connection.connect() sends", "Direct.connect")
            # ... and the streams carry commands and replies past redis-py.
            assert await direct.call(lambda: [("PING",), ("ECHO", b"\x00x")]) == [b"PONG", b"\x00x"]
    finally:
        await direct.aclose()
        await client.aclose()
