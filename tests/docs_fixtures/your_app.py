"""Given: the reader's own app and payload types, which a fragment of the docs uses.

A fragment such as ``@app.job(schema=Email) def send_mail(...)`` takes ``app``
and ``Email`` as the reader's; this defines them, on an in-process store.
"""

import smtplib  # noqa: F401 - the fragments' handlers use it

import msgspec

from asyncq import App, JobContext  # noqa: F401 - the fragments' annotations use it

app = App("yours", backend="memory://")


class Charge(msgspec.Struct):
    order_id: str
    cents: int


class Receipt(msgspec.Struct):
    order_id: str
    charged: int


class Email(msgspec.Struct):
    to: str
    subject: str


class Image(msgspec.Struct):
    path: str
    width: int


class Resized(msgspec.Struct):
    path: str
