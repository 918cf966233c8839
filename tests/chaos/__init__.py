"""The chaos suite: asyncq under the faults of an operator's worst day, with figures.

Every test is marked ``slow`` and ``chaos``, bounded in time, and prints one
line of figures (jobs, faults injected, lost, duplicates, stuck, seconds; run
pytest with ``-s`` to see them), also written as JSON to the test's temporary
directory and appended to ``chaos-figures.jsonl`` in pytest's base one.
docs/guarantees.md ("Failure modes") reports them.

Covered:

- ``test_signals``: a SIGKILL storm and a SIGTERM storm of three ``asyncq run``
  workers on SQLite, Redis and PostgreSQL, with a durable execution log;
- ``test_connections``: Redis ``CLIENT KILL`` of the workers' connections and a
  restart of a Redis the test started, and PostgreSQL ``pg_terminate_backend``
  of every asyncq connection, during a drain with ``enqueue_and_wait`` load;
- ``test_cluster``: a Redis Cluster of three primaries with a replica each,
  one primary killed during a drain and a request/response load;
- ``test_model``: a Hypothesis state machine driving every backend through
  the ``Backend`` protocol, checked step by step against the memory backend.

The corruption fuzzer lives beside each store's tests, since it writes the
store's own fields: ``tests/backends/test_poison_{sqlite,postgres,redis}.py``
overwrites each stored field of one job in turn with garbage (the other jobs
all run, the worker survives, operators see the job as ``<unreadable>``).
"""
