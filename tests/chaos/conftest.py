"""Fixtures of the chaos suite, borrowed from the process and resilience tests.

``store_url`` (a SQLite file, a Redis namespace or a PostgreSQL schema that
worker processes share, parametrized over the three) comes from
``test_run_process``; ``private_redis`` (a ``redis-server`` of the test's own,
which it may stop and start) from ``test_resilience``.
"""

from __future__ import annotations

from test_resilience import private_redis
from test_run_process import store_url

__all__ = ["private_redis", "store_url"]
