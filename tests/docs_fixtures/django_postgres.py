"""Given: a Django project on PostgreSQL around docs/django.md's view in the transaction.

Django's tables and the app's store are in the test database, each in a
schema of its own made for this run (and dropped at exit), as the recipe
needs: the order and its job are written through one connection.
"""

import atexit
import os
import uuid

import django
import psycopg
from django.core.management import call_command
from tests.conftest import POSTGRES_DSN, require_service

require_service("PostgreSQL", POSTGRES_DSN, 5432, "ASYNCQ_TEST_POSTGRES_DSN")
run = uuid.uuid4().hex[:10]
tables, store = f"docs_django_{run}", f"docs_django_jobs_{run}"
with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
    admin.execute(f"CREATE SCHEMA {tables}")


@atexit.register
def _drop() -> None:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {tables} CASCADE")
        admin.execute(f"DROP SCHEMA IF EXISTS {store} CASCADE")


os.environ["SHOP_POSTGRES_DSN"] = POSTGRES_DSN
os.environ["SHOP_POSTGRES_SCHEMA"] = tables
os.environ["ASYNCQ_BACKEND"] = f"{POSTGRES_DSN}?schema={store}"
os.environ["DJANGO_SETTINGS_MODULE"] = "shop.settings"
django.setup()
call_command("migrate", run_syncdb=True, verbosity=0)

from shop.jobs import app as _jobs  # noqa: E402 - once ASYNCQ_BACKEND names the store

_jobs.sync.call(_jobs.admin.migrate)  # `asyncq migrate` at deploy time
