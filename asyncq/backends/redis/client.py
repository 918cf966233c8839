"""The Redis backend's client: connecting, and turning driver errors into asyncq's.

``url_options`` reads asyncq's options out of a URL and refuses any that
neither asyncq nor redis-py takes; ``connect`` makes a client from the rest,
``side_client`` one with a pool of its own (``live_side_client``: on a
cluster node that answers); ``mapped`` turns driver errors
into asyncq's (see ``failure``), and ``describe`` names a client given by the
caller. URLs are masked by the kit's ``mask_url``.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections.abc import Callable, Coroutine, Mapping
from functools import cache, wraps
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import (
    URL_QUERY_ARGUMENT_PARSERS,
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    MaxConnectionsError,
    ReadOnlyError,
    RedisClusterException,
    RedisClusterUnreachableError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ...exceptions import BackendError, BackendUnavailable, ConfigurationError
from .._common import (
    RETENTION_OPTIONS,
    Converter,
    flag,
    mask_url,
    parse_url_options,
    seconds,
    text,
)

__all__ = [
    "DRIVER_OPTIONS",
    "OWN_OPTIONS",
    "POOL_SIZE",
    "POOL_TIMEOUT",
    "UNAVAILABLE",
    "connect",
    "describe",
    "failure",
    "live_side_client",
    "mapped",
    "mask_url",
    "pool_kwargs",
    "side_client",
    "url_options",
]


class _HasUrl(Protocol):
    @property
    def url(self) -> str: ...


_S = TypeVar("_S", bound=_HasUrl)
_P = ParamSpec("_P")
_T = TypeVar("_T")

#: connections the client's pool holds at most, unless ``max_connections`` says otherwise
POOL_SIZE = 100
#: connections beyond a worker's concurrency its pool is grown to hold
#: (``RedisBackend.fit_concurrency``): the worker's own calls, and producers
#: sharing the process
POOL_HEADROOM = 20
#: seconds a call waits for a free connection of a full pool (``pool_timeout``)
POOL_TIMEOUT = 10.0
#: seconds a cluster node has to answer the PING that picks it for a side client
PROBE_TIMEOUT = 2.0
#: options of asyncq's own, taken out of the URL's query before redis-py reads it
OWN_OPTIONS: Mapping[str, Converter] = {
    "namespace": text,
    "cluster": flag,
    "pool_timeout": seconds,
    "events": flag,
    **RETENTION_OPTIONS,
}
#: the settings redis-py takes as text in a URL's query (it converts those of
#: ``URL_QUERY_ARGUMENT_PARSERS``, and passes any other name on as text)
_DRIVER_TEXT = frozenset(
    {
        "client_name",
        "encoding",
        "encoding_errors",
        "lib_name",
        "lib_version",
        "password",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_cert_reqs",
        "ssl_certfile",
        "ssl_ciphers",
        "ssl_keyfile",
        "ssl_password",
        "username",
    }
)
#: redis-py's query options, for any client (``driver_options`` says which one takes which)
DRIVER_OPTIONS = frozenset({*URL_QUERY_ARGUMENT_PARSERS, *_DRIVER_TEXT})
#: options a (blocking) connection pool takes besides its connections' settings
_POOL_OPTIONS = frozenset({"max_connections", "timeout"})

UNAVAILABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    AskError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
)
#: error replies that a restart or a failover causes (over ``Direct`` they come as
#: plain ``ResponseError``\ s): loading, no primary, a slot moving, a demoted primary
_TRANSIENT_REPLIES = (
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "MOVED ",
    "ASK ",
)
_AUTH_ERRORS = (AuthenticationError, AuthenticationWrongNumberOfArgsError)
_AUTH_REPLIES = ("NOAUTH", "WRONGPASS")
#: what a ``BlockingConnectionPool`` raises when ``pool_timeout`` passed
_POOL_WAIT_TEXT = "No connection available."
#: connection settings that belong to one pool and must not be copied into another
_POOL_ONLY = frozenset(
    {
        "maint_notifications_pool_handler",
        "orig_host_address",
        "orig_socket_timeout",
        "orig_socket_connect_timeout",
    }
)


def mapped(
    method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]]:
    """Turn driver errors into ``BackendUnavailable`` / ``BackendError`` naming the URL
    (see ``failure``), also out of a task group that failed with one."""

    @wraps(method)
    async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            found = failure(self.url, exc)
            if found is None:
                raise
            error, cause = found
            if error is exc:
                raise
            raise error from cause

    return wrapper


def failure(url: str, exc: Exception) -> tuple[BackendError, BaseException] | None:
    """The asyncq error for ``exc`` from the Redis at ``url``, with the error it stands for.

    ``BackendUnavailable`` for what passes (a connection, a timeout, a server
    still loading its data, a cluster failing over, a full pool);
    ``BackendError`` for a wrong answer, and for credentials the server refused
    ("authentication failed"). An ``ExceptionGroup`` (a task group of the
    backend's) stands for its first error if all of them are the driver's or
    asyncq's. ``None``: not an error of the store.
    """
    if isinstance(exc, ExceptionGroup):
        leaves = _leaves(exc)
        found = [failure(url, leaf) for leaf in leaves]
        if not leaves or any(f is None for f in found):
            return None
        return found[0]
    if isinstance(exc, BackendError):
        return exc, exc
    if not isinstance(exc, RedisError | RedisClusterException):
        return None
    text = str(exc)
    if isinstance(exc, _AUTH_ERRORS) or text.startswith(_AUTH_REPLIES):
        # redis-py's text names no credential; the URL is masked.
        return BackendError(f"Redis at {url}: authentication failed: {text}"), exc
    if isinstance(exc, MaxConnectionsError) or text == _POOL_WAIT_TEXT:
        msg = f"Redis at {url}: no free connection in the client's pool: {text}"
        return BackendUnavailable(msg), exc
    if (
        isinstance(exc, UNAVAILABLE)
        or isinstance(exc.__cause__, UNAVAILABLE)
        or text.startswith(_TRANSIENT_REPLIES)
    ):
        # A cluster none of whose nodes answers raises RedisClusterException from a
        # ConnectionError. The replies come as plain ResponseErrors over Direct.
        return BackendUnavailable(f"Redis at {url} is unreachable: {text}"), exc
    return BackendError(f"Redis at {url} failed: {type(exc).__name__}: {text}"), exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[Exception]:
    """The errors in ``group`` and the groups inside it; none if one is not an Exception."""
    found: list[Exception] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _leaves(exc)
            if not inner:
                return []
            found += inner
        elif isinstance(exc, Exception):
            found.append(exc)
        else:
            return []
    return found


def side_client(client: Any, name: str, role: str, node: Any = None) -> aioredis.Redis:
    """A client with its own pool, so blocking reads never hold the main pool's connections.

    It copies the settings of ``client`` (or of one cluster ``node``) and is named
    ``<name>:<role>`` in ``CLIENT LIST``.
    """
    kwargs = {k: v for k, v in pool_kwargs(client, node).items() if k not in _POOL_ONLY}
    kwargs["client_name"] = f"{name}:{role}"
    kwargs["socket_timeout"] = None  # a blocking read may outlast any socket timeout
    cls = node.connection_class if node is not None else _connection_class(client)
    # from_pool: closing the client closes (disconnects) the pool too.
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(connection_class=cls, **kwargs))


async def live_side_client(
    cluster: Any, name: str, role: str, failed: aioredis.Redis | None
) -> aioredis.Redis | None:
    """A ``side_client`` on a node of ``cluster`` that answers a PING now, or ``None``.

    The nodes are those of the cluster's current slot map (which the cluster
    client refreshes after errors of its own calls), in random order, so the
    side clients of many processes spread over them; the node of ``failed``
    comes last. Each has ``PROBE_TIMEOUT`` seconds to answer.
    """
    avoid = None
    if failed is not None:
        kwargs = failed.connection_pool.connection_kwargs
        avoid = (kwargs.get("host"), kwargs.get("port"))
    nodes = list(cluster.get_nodes())
    random.shuffle(nodes)
    nodes.sort(key=lambda node: (node.host, node.port) == avoid)
    for node in nodes:
        candidate = side_client(cluster, name, role, node)
        answered = False
        try:
            with anyio.move_on_after(PROBE_TIMEOUT):
                answered = bool(await candidate.ping())
        except RedisError:
            pass
        finally:
            if not answered:  # also when cancelled: the candidate must not stay open
                with anyio.CancelScope(shield=True), contextlib.suppress(RedisError):
                    await candidate.aclose()
        if answered:
            return candidate
    return None


def url_options(url: str, given: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """asyncq's options in ``url``'s query with the keyword ones ``given`` over them, and the
    URL left for redis-py.

    The options are those of ``OWN_OPTIONS`` (converted) and, in the keywords,
    whatever else goes to redis-py. The URL keeps redis-py's own query options.

    Raises:
        ConfigurationError: an option neither asyncq nor the client this URL makes
            takes (the message lists those it does), or a malformed one.
    """
    found, rest = parse_url_options(url, OWN_OPTIONS, driver=DRIVER_OPTIONS)
    found.update(given)
    takes = driver_options(_scheme(url), bool(found.get("cluster", False)))
    if takes != DRIVER_OPTIONS:
        # Refuses, naming what this client takes, a name only another one would.
        parse_url_options(url, OWN_OPTIONS, driver=takes)
    return found, rest


@cache
def driver_options(scheme: str, cluster: bool) -> frozenset[str]:
    """redis-py's query options that the client made for ``scheme`` (and ``cluster``) takes.

    Those of ``DRIVER_OPTIONS`` that the client's constructor accepts: redis-py
    passes every query option to it as a keyword, so any other name would
    fail there (the TLS ones without TLS, ``timeout`` on a cluster, ...).
    """
    takes: frozenset[str]
    if cluster:
        takes = _parameters(RedisCluster)
    else:
        kind = {"rediss": SSLConnection, "unix": UnixDomainSocketConnection}.get(scheme, Connection)
        # A connection class passes the settings it does not know on to its bases.
        takes = _POOL_OPTIONS.union(
            *(_parameters(c) for c in kind.__mro__ if issubclass(c, AbstractConnection))
        )
    return DRIVER_OPTIONS & takes


def _parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls).parameters)


def _scheme(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    return {"valkey": "redis", "valkeys": "rediss"}.get(scheme, scheme)


def connect(url: str, name: str, masked: str, options: dict[str, Any]) -> Any:
    """A client for ``url``: a ``RedisCluster`` with ``cluster``, else a ``Redis`` whose
    pool holds ``max_connections`` (default ``POOL_SIZE``) and makes a call wait up to
    ``pool_timeout`` seconds (default ``POOL_TIMEOUT``) for a free one.

    ``url`` carries redis-py's query options only (see ``url_options``);
    ``options`` are ``cluster``, ``pool_timeout`` and redis-py's keywords.
    """
    scheme = _scheme(url)
    if scheme not in ("redis", "rediss", "unix"):
        msg = f"not a Redis URL: {masked!r} (use redis://, rediss://, unix:// or valkey://)"
        raise ConfigurationError(msg)
    cluster = bool(options.pop("cluster", False))
    wait = options.pop("pool_timeout", POOL_TIMEOUT)
    driver_url = scheme + url[url.index("://") :]
    options.setdefault("max_connections", POOL_SIZE)
    try:
        wait = float(wait)
        if cluster:
            if scheme == "unix":
                msg = f"a Redis Cluster is reached over TCP, not {masked!r}"
                raise ConfigurationError(msg)
            parts = urlsplit(driver_url)
            dbs = [options.get("db"), *parse_qs(parts.query).get("db", []), parts.path.strip("/")]
            db = next((str(d) for d in dbs if d not in (None, "", "0", 0)), "0")
            if db != "0":
                msg = (
                    f"a Redis Cluster has only database 0, but {masked!r} asks for database "
                    f"{db}: drop the database number from the URL (keep apps apart with "
                    "?namespace=NAME instead)"
                )
                raise ConfigurationError(msg)
            return RedisCluster.from_url(driver_url, client_name=name, **options)
        # A dropped connection (restart, failover, CLIENT KILL) is retried on a new
        # one. If the first attempt did run, the replay finds its work done (enqueue
        # returns the stored jobs, settle reports False), except claim, whose first
        # leases then lapse and are recovered: at-least-once holds either way.
        backoff = EqualJitterBackoff(cap=0.5, base=0.05)
        options.setdefault("retry", Retry(backoff, 3))
        # A blocking pool: a burst of calls beyond its size waits for a connection
        # (at most ``wait`` seconds) instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            driver_url, client_name=name, timeout=wait, **options
        )
        # from_pool: closing the client closes the pool, as from_url's would.
        return aioredis.Redis.from_pool(pool)
    except (TypeError, ValueError) as exc:
        msg = f"bad Redis URL or option ({masked}): {exc}"
        raise ConfigurationError(msg) from exc


def pool_kwargs(client: Any, node: Any) -> dict[str, Any]:
    if node is not None:
        return dict(node.connection_kwargs)
    if isinstance(client, RedisCluster):
        return dict(client.get_connection_kwargs())
    return dict(client.connection_pool.connection_kwargs)


def _connection_class(client: Any) -> Any:
    return client.connection_pool.connection_class


def describe(client: Any) -> str:
    """A URL for a client given by the caller (it has no password to mask)."""
    if isinstance(client, RedisCluster):
        nodes = list(client.nodes_manager.startup_nodes.values())
        node = nodes[0] if nodes else client.get_default_node()
        return f"redis://{node.host}:{node.port}?cluster=true"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"
