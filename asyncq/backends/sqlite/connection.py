"""The SQLite backend's connection: one transaction at a time, on a thread.

``_Database`` is what ``SQLiteBackend`` does with its one ``sqlite3``
connection: open it (WAL, ``synchronous=NORMAL``), run each operation as one
transaction on the database thread (``_run``), retry an operation that found
the database locked, with growing, jittered pauses, until ``lock_timeout``
(``_in_thread``), and say what an ``sqlite3`` error means to asyncq
(``_error``): ``BackendUnavailable`` for a database locked too long, or one
the system cannot open, read or write now (permissions, a full disk, an I/O
error), and
``BackendError`` for the rest (a path that can never work, a closed backend,
a failing statement). The package's docstring tells why it is done so
(threads, processes, durability).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import anyio
from anyio import to_thread

from ...exceptions import BackendError, BackendUnavailable
from .schema import meta_value

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["_Database"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Pauses between attempts on a locked database: full jitter, doubling to the cap.
_FIRST_PAUSE = 0.01
_MAX_PAUSE = 0.5
# SQLite primary result codes (the low byte of extended codes).
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_CANTOPEN = 14
_UNAVAILABLE_CODES = frozenset({3, 8, 10, 13, 14, 22})  # PERM READONLY IOERR FULL CANTOPEN NOLFS


class _Database:
    """The connection and transactions of ``SQLiteBackend``, on the state it holds.

    What they use of the backend is declared here for the type checker;
    ``SQLiteBackend`` sets it.
    """

    _path: str
    _busy_timeout: float
    _lock_timeout: float
    _clock: Callable[[], float]
    _conn: sqlite3.Connection | None
    _turn: anyio.Lock
    _limiter: anyio.CapacityLimiter
    _closed: bool

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: the backend issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.create_function("asyncq_meta_value", 2, meta_value, deterministic=True)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    async def _run(
        self,
        write: bool,
        body: Callable[Concatenate[sqlite3.Connection, float, _P], _T],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run ``body(conn, now, ...)`` as one transaction on the database thread."""
        conn = self._conn
        if conn is None:
            state = "closed" if self._closed else "not open"
            msg = f"{self!r} is {state}: call open() first"
            raise BackendError(msg)

        def transaction() -> _T:
            # IMMEDIATE takes the write lock before the first read, so what a
            # body reads cannot change before it writes: no other process can
            # claim the same job, and a lock conflict surfaces here, not mid-way.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = body(conn, self._clock(), *args, **kwargs)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.rollback()
                raise
            return result

        return await self._in_thread(transaction)

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        """Run ``call`` on the database thread, retrying while the database is locked."""
        pause = _FIRST_PAUSE
        give_up_at: float | None = None
        while True:
            try:
                async with self._turn:
                    # Shielded so a cancelled caller still gets the result it
                    # must act on (claim); the thread runs to its end regardless.
                    with anyio.CancelScope(shield=True):
                        return await to_thread.run_sync(call, limiter=self._limiter)
            except sqlite3.Error as exc:
                if self._closed or not _is_busy(exc):
                    raise self._error(exc) from exc
                now = anyio.current_time()
                give_up_at = now + self._lock_timeout if give_up_at is None else give_up_at
                if now >= give_up_at:
                    msg = (
                        f"the SQLite database {self._path!r} stayed locked by another connection"
                        f" for over {self._lock_timeout:g}s; find the process holding a long"
                        " transaction on it"
                    )
                    raise BackendUnavailable(msg) from exc
                await anyio.sleep(min(random.uniform(0.0, pause), give_up_at - now))
                pause = min(pause * 2, _MAX_PAUSE)

    def _wrong_path(self) -> str | None:
        """Why the database path can never be opened as it is, or ``None``."""
        if self._path == ":memory:" or self._path.startswith("file:"):
            return None
        if os.path.isdir(self._path):
            return "it is a directory"
        parent = os.path.dirname(os.path.abspath(self._path))
        if os.path.isdir(parent):
            return None
        if os.path.exists(parent):
            return f"{parent!r} is not a directory"
        return f"its directory {parent!r} does not exist"

    def _error(self, exc: sqlite3.Error) -> BackendError:
        if self._closed:
            return BackendError(f"{self!r} is closed")
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == _CANTOPEN and (wrong := self._wrong_path()):
            # Waiting cannot help a path that names no usable file: say so, once.
            return BackendError(
                f"cannot use the SQLite database {self._path!r}: {exc} ({wrong}): "
                "fix the path in the backend URL"
            )
        if code is not None and code & 0xFF in _UNAVAILABLE_CODES:
            msg = (
                f"cannot use the SQLite database {self._path!r}: {exc}"
                " (check that its directory exists, is writable and has space)"
            )
            return BackendUnavailable(msg)
        return BackendError(f"the SQLite database {self._path!r} failed: {exc}")


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)
