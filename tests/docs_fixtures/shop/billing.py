"""The reader's billing through a card gateway that times out twice, then answers.

``docs/testing.md``'s retried charge: a job of its own, so that the checkout
test's ``shop.charge`` still succeeds on its first attempt.
"""

from __future__ import annotations

from shop.jobs import Charge, Receipt, app

from asyncq import JobContext

__all__ = ["Charge", "GatewayTimeout", "charge"]


class GatewayTimeout(Exception):
    """The card gateway did not answer in time."""


@app.job(schema=Charge, name="billing.charge", queue="payments")
async def charge(payload: Charge, ctx: JobContext) -> Receipt:
    if ctx.attempt <= 2:  # the gateway is flaky: its first two answers time out
        msg = f"the gateway did not answer for order {payload.order_id}"
        raise GatewayTimeout(msg)
    return Receipt(payload.order_id, payload.cents)
