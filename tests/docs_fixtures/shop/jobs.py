"""The reader's ``shop.jobs``: the app and jobs that the docs' fragments import.

``shop`` is a namespace package (no ``__init__.py``): a page that writes a
module of its own into ``shop/`` (``shop/views.py``) still finds this one.
"""

from __future__ import annotations

import msgspec

from asyncq import App

app = App("shop")  # the store: ASYNCQ_BACKEND, else ./asyncq.db


class Charge(msgspec.Struct):
    order_id: str
    cents: int


class Receipt(msgspec.Struct):
    order_id: str
    charged: int


class Reindex(msgspec.Struct):
    product: str
    version: int


class Signup(msgspec.Struct):
    email: str


class Reminder(msgspec.Struct):
    user: str


@app.job(schema=Receipt, name="shop.send_receipt", queue="emails")
async def send_receipt(receipt: Receipt) -> None:
    """Mail the receipt (a minute after the charge, once the order page is shown)."""


@app.job(schema=Charge, name="shop.charge", queue="payments")
async def charge(payload: Charge) -> Receipt:
    receipt = Receipt(payload.order_id, payload.cents)
    await send_receipt.enqueue(receipt, delay=60, key=payload.order_id)
    return receipt


@app.job(schema=Reindex, name="reindex")
async def reindex(payload: Reindex) -> int:
    return payload.version


@app.job(schema=Signup, name="shop.welcome", queue="emails")
async def welcome(signup: Signup) -> None:
    """Mail a new customer a welcome (``shop/signup.py`` enqueues it)."""


@app.job(schema=Reminder, name="shop.remind", queue="emails")
async def remind(reminder: Reminder) -> None:
    """Remind a customer of the basket they left."""
