"""Given: docs/migrating.md's Celery app talks to Celery's in-memory broker, not to a Redis.

Celery reads ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` before the
app's own ``broker=`` and ``backend=``: the sample runs as written, and the
test Redis keeps no message of it. It runs in a fresh interpreter.
"""

import os

os.environ["CELERY_BROKER_URL"] = "memory://"
os.environ["CELERY_RESULT_BACKEND"] = "cache+memory://"
