"""Django and asyncq: enqueue on commit from a view, or inside the view's own transaction.

A Django project in one module (``configure`` stands for ``settings.py``), so
that the test suite runs it as it is. Two views, the two recipes of
``docs/django.md``:

- ``checkout``: the order is written in a transaction, and the job enqueued
  by ``transaction.on_commit`` through ``app.sync``: a rolled-back order
  enqueues nothing. Works with any store.
- ``checkout_atomic`` (PostgreSQL, psycopg 3): the job is written inside the
  view's transaction, through Django's own connection, into the store's
  schema in the same database: the order and its job commit together or not
  at all.

Run the worker beside it: ``asyncq run examples.django_shop:jobs``.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from django.conf import settings
from django.db import connections, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path

from asyncq import App

jobs = App("django-shop")


class Charge(msgspec.Struct):
    order_id: str
    cents: int


def _charged(payload: Charge) -> str:
    return f"charged {payload.cents} for order {payload.order_id}"


@jobs.job(schema=Charge, name="shop.charge", queue="payments")
async def charge(payload: Charge) -> str:
    return _charged(payload)


def configure(databases: dict[str, dict[str, Any]]) -> None:
    """``settings.py``: the databases, and this module as the URL conf."""
    import django

    settings.configure(
        DEBUG=False,
        SECRET_KEY="django-shop-example",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        DATABASES=databases,
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
    )
    django.setup()


def create_tables(using: str = "default") -> None:
    """A migration of the shop's own table (a model would do the same)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS shop_order (id INTEGER PRIMARY KEY"
            + (" GENERATED ALWAYS AS IDENTITY" if connections[using].vendor == "postgresql" else "")
            + ", cents INTEGER NOT NULL)"
        )


def _new_order(using: str, cents: int) -> int:
    with connections[using].cursor() as cursor:
        cursor.execute("INSERT INTO shop_order (cents) VALUES (%s) RETURNING id", [cents])
        (order_id,) = cursor.fetchone()
    return int(order_id)


def checkout(request: HttpRequest) -> JsonResponse:
    """The order in a transaction; its charge enqueued once the transaction commits."""
    body = json.loads(request.body)
    with transaction.atomic():
        order_id = _new_order("default", body["cents"])
        payload = Charge(str(order_id), body["cents"])
        # The key makes a retried request harmless.
        transaction.on_commit(lambda: jobs.sync.enqueue(charge, payload, key=str(order_id)))
        if body.get("fail"):
            msg = "payment form rejected"
            raise ValueError(msg)  # rolls the order back: nothing is enqueued
    return JsonResponse({"order": order_id})


#: The app whose store is the PostgreSQL database of the ``orders`` alias
#: (``use_backend`` sets it, from the same settings).
atomic_jobs = App("django-shop-atomic")


@atomic_jobs.job(schema=Charge, name="shop.charge", queue="payments")
async def atomic_charge(payload: Charge) -> str:
    return _charged(payload)


def checkout_atomic(request: HttpRequest) -> JsonResponse:
    """The order and its job in one transaction of the ``orders`` database."""
    body = json.loads(request.body)
    connection = connections["orders"]
    with transaction.atomic(using="orders"):
        order_id = _new_order("orders", body["cents"])
        atomic_jobs.sync.enqueue(
            atomic_charge,
            Charge(str(order_id), body["cents"]),
            key=str(order_id),
            connection=connection.connection,  # the psycopg.Connection under Django's
        )
        if body.get("fail"):
            msg = "payment form rejected"
            raise ValueError(msg)  # rolls back the order and its job together
    return JsonResponse({"order": order_id})


urlpatterns = [
    path("checkout", checkout),
    path("checkout-atomic", checkout_atomic),
]
