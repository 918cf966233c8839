"""The reader's web service: ``POST /checkout`` charges an order (``docs/testing.md``)."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel
from shop.jobs import Charge, charge

service = FastAPI()

#: What every order of this small shop costs, in cents.
PRICE = 500


class Checkout(BaseModel):
    order: str


@service.post("/checkout", status_code=202)
async def checkout(body: Checkout) -> dict[str, str]:
    handle = await charge.enqueue(Charge(body.order, PRICE), key=body.order)
    return {"job": handle.id}
