"""The PostgreSQL backend's connections, and what their errors mean to asyncq.

``Transport`` owns the pool (made from a DSN, or given), the connection
the listener borrows, the one-off connections ``migrate`` and checks use
before ``open``, and the translation of asyncpg's errors into asyncq's:
``BackendUnavailable`` when the server cannot be reached, ``BackendError``
when it answered wrongly. ``run`` tries a statement once more after a
connection error, on a fresh connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ...exceptions import BackendError, BackendUnavailable, ConfigurationError
from .._common import mask_url
from .url import check_dsn

if TYPE_CHECKING:
    from .listen import Connection

__all__ = ["Transport"]

_T = TypeVar("_T")

# What "cannot be reached" looks like from asyncpg: socket errors, the server
# refusing or shutting down, a connection that is gone. (A bare InterfaceError
# is a closed connection or pool; its subclasses are client-side mistakes. An
# InternalClientError is what a statement meets on a connection the server
# has just terminated, before the client has seen it close.)
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from asyncpg or the socket under it."""
    return isinstance(exc, _UNAVAILABLE) or type(exc).__module__.startswith("asyncpg")


async def _keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset, which does nothing.

    No statement of this backend leaves session state behind (no LISTEN on
    pooled connections, no settings, and prune unlocks its advisory lock or
    drops the connection), so asyncpg's default reset query would only cost
    a second round trip per call. An open transaction is still rolled back.
    """


class Transport:
    """The connections of one ``PostgresBackend``.

    Args:
        dsn_or_pool: a ``postgresql://`` DSN (a pool is made on ``start`` and
            closed on ``close``), or an ``asyncpg.Pool`` the caller owns.
        schema: the backend's schema: names its connections to the server
            and its URL.
        open_backend: opens the backend; the first statement run before
            ``open`` calls it.
        min_size: the pool's minimum connections (DSN only).
        max_size: the pool's maximum connections (DSN only).
        connect_kwargs: passed to ``asyncpg.create_pool`` and ``asyncpg.connect``.
    """

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool[asyncpg.Record],
        *,
        schema: str,
        open_backend: Callable[[], Awaitable[None]],
        min_size: int,
        max_size: int,
        connect_kwargs: dict[str, Any],
    ) -> None:
        given: object = dsn_or_pool  # checked at run time: callers may not be typed
        if isinstance(given, str):
            check_dsn(given)
            self._dsn: str | None = given
            self._given_pool: asyncpg.Pool[asyncpg.Record] | None = None
            self._address = mask_url(given)
        elif isinstance(given, asyncpg.Pool):
            self._dsn, self._given_pool = None, given
            self._address = "postgresql://(asyncpg pool)"
        else:
            msg = f"PostgresBackend needs a DSN or an asyncpg.Pool, not {type(given)!r}"
            raise ConfigurationError(msg)
        self._schema = schema
        self._open_backend = open_backend
        self._min_size, self._max_size = min_size, max_size
        # A generic plan made while the table was small (a seq scan over a
        # few rows) would be kept while it grows to millions; planning each
        # statement for the table as it is costs a fraction of a millisecond.
        # The application name lets an operator find a worker's connections in
        # pg_stat_activity, like the client name on Redis.
        settings = {"plan_cache_mode": "force_custom_plan", "application_name": f"asyncq:{schema}"}
        settings.update(connect_kwargs.get("server_settings") or {})
        self._connect_kwargs = {**connect_kwargs, "server_settings": settings}
        #: The pool statements run on, from ``start`` until ``close``.
        self.pool: asyncpg.Pool[asyncpg.Record] | None = None
        #: Set by the backend's ``close`` before anything closes, so that no
        #: statement reopens it; cleared when it opens again.
        self.closed = False

    @property
    def url(self) -> str:
        """Where the store is, without a password (the backend's ``url``)."""
        if self._schema == "asyncq":
            return self._address
        return f"{self._address}{'&' if '?' in self._address else '?'}schema={self._schema}"

    # -- errors ------------------------------------------------------------------

    def translate(self, exc: BaseException) -> BackendError:
        """Map a driver error to asyncq's: unreachable or answered wrongly."""
        if isinstance(exc, _UNAVAILABLE) or type(exc) is asyncpg.InterfaceError:
            return BackendUnavailable(f"PostgreSQL at {self.url} is unavailable: {exc}")
        return BackendError(f"PostgreSQL at {self.url} failed: {type(exc).__name__}: {exc}")

    @contextmanager
    def mapped(self) -> Iterator[None]:
        """Let no driver exception out: raise asyncq's instead."""
        try:
            yield
        except Exception as exc:
            if is_driver_error(exc):
                raise self.translate(exc) from exc
            raise

    @contextmanager
    def _configured(self) -> Iterator[None]:
        """Report what asyncpg refuses in the DSN or the connect options as ``ConfigurationError``.

        asyncpg reads them as it connects, and refuses them with a
        ``ValueError`` (its ``ClientConfigurationError`` is one): a mistake in
        the URL or the options, not a store that failed. Wraps connecting only.
        """
        try:
            yield
        except ValueError as exc:
            msg = f"cannot connect to PostgreSQL with {self.url}: {exc}"
            raise ConfigurationError(msg) from exc

    def closed_error(self) -> BackendUnavailable:
        """What a call on the closed backend raises."""
        return BackendUnavailable(f"the PostgreSQL backend for {self.url} is closed")

    # -- the pool ----------------------------------------------------------------

    async def start(self, whoami: str) -> None:
        """Make the pool, or take the one given (``whoami`` then names the server in ``url``)."""
        if self._given_pool is not None:
            if self._given_pool.get_max_size() < 2:
                msg = (
                    "PostgresBackend needs an asyncpg pool of max_size >= 2: "
                    "it holds one connection for LISTEN while waiting"
                )
                raise ConfigurationError(msg)
            self.pool = self._given_pool
            user, database, host, port = await self.fetchrow(whoami)
            where = f"{host}:{port}" if host else "(local socket)"
            self._address = f"postgresql://{user}@{where}/{database}"
            return
        assert self._dsn is not None
        with self.mapped(), self._configured():
            self.pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                reset=_keep_session,
                **self._connect_kwargs,
            )

    async def close(self) -> None:
        """Close the pool if it is the backend's own (a given pool is the caller's)."""
        pool, self.pool = self.pool, None
        if pool is not None and pool is not self._given_pool:
            with anyio.move_on_after(10) as scope:
                await pool.close()
            if scope.cancelled_caught:
                pool.terminate()

    async def ready_pool(self) -> asyncpg.Pool[asyncpg.Record]:
        """The pool, opening the backend first if need be."""
        if self.pool is None:
            if self.closed:
                raise self.closed_error()
            await self._open_backend()
        assert self.pool is not None
        return self.pool

    async def run(self, op: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run ``op`` on a pooled connection, mapping driver errors.

        A connection error is tried once more on a fresh connection: after a
        server restart or ``pg_terminate_backend`` the pool's idle connections
        are dead, so the pool replaces them all and the retry reconnects.
        Every statement is safe to repeat (a repeated enqueue is a no-op by
        id); the one imprecision is a settle whose first try committed but
        whose reply was lost: it then reports ``False`` for outcomes that were
        in fact applied.
        """
        pool = await self.ready_pool()
        for attempt in range(2):
            try:
                async with pool.acquire() as conn:
                    try:
                        return await op(conn)
                    except _UNAVAILABLE:
                        # The pool must not hand it out again (unless it was
                        # closed, and so given back, already).
                        with suppress(asyncpg.InterfaceError):
                            conn.terminate()
                        raise
            except Exception as exc:
                if not is_driver_error(exc):
                    raise
                error = self.translate(exc)
                if attempt == 0 and isinstance(error, BackendUnavailable) and not self.closed:
                    # What killed one connection (a restart, a failover, an
                    # operator) most likely killed its idle siblings too.
                    await pool.expire_connections()
                    continue
                raise error from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """``query``'s rows, through ``run``."""
        return await self.run(lambda conn: conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record:
        """``query``'s one row (it must return one), through ``run``."""
        row = await self.run(lambda conn: conn.fetchrow(query, *args))
        assert row is not None
        return row

    async def fetchval(self, query: str, *args: object) -> Any:
        """``query``'s first value, through ``run``."""
        return await self.run(lambda conn: conn.fetchval(query, *args))

    # -- other connections -------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection whether or not the backend is open (migrate, checks, drop)."""
        with self.mapped():
            pool = self.pool or self._given_pool
            if pool is not None:
                async with pool.acquire() as conn:
                    yield conn
            else:
                own = await self._connect()
                try:
                    yield own
                finally:
                    await own.close()

    async def listen_connect(self) -> Connection:
        """The listener's connection: one of the given pool, or one of its own."""
        if self._given_pool is not None:
            return await self._given_pool.acquire()
        return await self._connect()

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        """A connection of the backend's own, outside any pool (DSN only)."""
        assert self._dsn is not None
        with self._configured():
            return await asyncpg.connect(self._dsn, **self._connect_kwargs)

    async def listen_release(self, conn: Connection) -> None:
        """Give back or close what ``listen_connect`` returned."""
        # The connection may be dead already: releasing it is best effort.
        with suppress(Exception):
            if self._given_pool is not None and isinstance(conn, PoolConnectionProxy):
                await self._given_pool.release(conn, timeout=5)
                return
            with anyio.move_on_after(5):
                await conn.close()
            conn.terminate()
