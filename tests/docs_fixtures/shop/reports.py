"""The reader's nightly report, a cron job of ``shop.jobs``'s app (``docs/testing.md``).

A module of its own: its tick would be caught up by every test of the app
that advances the virtual clock by a day.
"""

from __future__ import annotations

import msgspec
from shop.jobs import app


class Report(msgspec.Struct):
    kind: str = "sales"


@app.cron("0 3 * * *")
@app.job(schema=Report, name="reports.nightly")
async def nightly_report(report: Report) -> None:
    """Sum up yesterday's sales."""
