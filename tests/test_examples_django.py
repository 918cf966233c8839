"""``examples/django_shop.py``: the Django recipes of docs/django.md, run as they are.

Django is configured once per process (``settings.configure``), so this module
configures it for both views: ``default`` a SQLite file, ``orders`` the
PostgreSQL test database through psycopg 3.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip(
    "django", reason="Django is not installed (pip install -r requirements-dev.txt)"
)
pytest.importorskip(
    "psycopg", reason="psycopg is not installed (pip install -r requirements-dev.txt)"
)

from django.db import connections
from django.test import Client
from examples import django_shop as shop

from asyncq import App, JobState
from asyncq.backends import from_url
from asyncq.testing import run_until_idle

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory, postgres_dsn: str) -> Iterator[Path]:
    """Django set up: ``default`` a SQLite file, ``orders`` the PostgreSQL test database."""
    from django.conf import settings

    where = tmp_path_factory.mktemp("django-shop")
    if not settings.configured:
        dsn = urlsplit(postgres_dsn)
        orders = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": dsn.path.lstrip("/"),
            "HOST": dsn.hostname or "127.0.0.1",
            "PORT": str(dsn.port or 5432),
        }
        if dsn.username:
            orders["USER"] = dsn.username
        shop.configure(
            {
                "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(where / "shop.db")},
                "orders": orders,
            }
        )
    shop.create_tables("default")
    shop.create_tables("orders")
    yield where
    with connections["orders"].cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS shop_order")
    connections.close_all()


def post(path: str, body: dict[str, Any]) -> Any:
    return Client().post(path, json.dumps(body), content_type="application/json")


def stored_jobs(app: App) -> list[Any]:
    return app.sync.call(lambda: app.admin.jobs(queue="payments"))


def order_count(using: str) -> int:
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM shop_order")
        (count,) = cursor.fetchone()
    return int(count)


def test_checkout_enqueues_once_the_order_commits(configured: Path) -> None:
    shop.jobs.use_backend(f"sqlite:///{configured / 'jobs.db'}")
    try:
        response = post("/checkout", {"cents": 500})
        assert response.status_code == 200
        order = str(response.json()["order"])
        with pytest.raises(ValueError, match="rejected"):
            post("/checkout", {"cents": 700, "fail": True})
        (job,) = stored_jobs(shop.jobs)  # the rolled-back order enqueued nothing
        assert job.key == order
        assert job.state is JobState.QUEUED
        assert order_count("default") == 1
        shop.jobs.sync.call(lambda: run_until_idle(shop.jobs, queues=["payments"]))
        done = shop.jobs.sync.get_job(job.id, shop.charge)
        assert done.result(timeout=10) == f"charged 500 for order {order}"
    finally:
        shop.jobs.sync.close()


def test_checkout_atomic_commits_the_order_and_its_job_together(
    configured: Path, postgres_dsn: str
) -> None:
    schema = f"django_{uuid.uuid4().hex[:10]}"
    backend = from_url(f"{postgres_dsn}?schema={schema}", migrate=True)
    shop.atomic_jobs.use_backend(backend)
    try:
        before = order_count("orders")
        response = post("/checkout-atomic", {"cents": 900})
        assert response.status_code == 200
        order = str(response.json()["order"])
        with pytest.raises(ValueError, match="rejected"):
            post("/checkout-atomic", {"cents": 300, "fail": True})
        (job,) = stored_jobs(shop.atomic_jobs)  # the rolled-back one took its job with it
        assert job.key == order
        assert order_count("orders") == before + 1
        shop.atomic_jobs.sync.call(lambda: run_until_idle(shop.atomic_jobs, queues=["payments"]))
        done = shop.atomic_jobs.sync.get_job(job.id, shop.atomic_charge)
        assert done.result(timeout=10) == f"charged 900 for order {order}"
    finally:
        shop.atomic_jobs.sync.call(lambda: backend.drop())
        shop.atomic_jobs.sync.close()
