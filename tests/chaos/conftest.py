"""Fixtures of the chaos suite: the stores that worker processes share (``tests/_services.py``).

``store_url`` (a SQLite file, a Redis namespace or a PostgreSQL schema,
parametrized over the three) and ``private_redis`` (a ``redis-server`` of the
test's own, which it may stop and start).
"""

from __future__ import annotations

from _services import private_redis, store_url

__all__ = ["private_redis", "store_url"]
