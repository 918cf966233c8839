"""The ``limits`` command: each flow-control limit and its current use."""

from __future__ import annotations

from typing import Any

import click

from .._records import LimitState
from ..admin import Admin
from ._base import Verb, app_options, call, echo_json, open_app
from ._render import limits_text

__all__ = ["limit_dict", "limits"]


def limit_dict(state: LimitState) -> dict[str, Any]:
    """One limit counter for ``--json``."""
    return {
        "slot": state.slot,
        "name": state.name,
        "key": state.key,
        "queue": state.queue,
        "concurrency": state.concurrency,
        "running": state.running,
        "held": state.held,
        "rate": state.rate,
        "per": state.per,
        "burst": state.burst,
        "tokens": None if state.rate is None else round(state.tokens, 3),
    }


@click.command(cls=Verb)
@app_options
def limits(app_path: str, backend: str | None, as_json: bool) -> None:
    """List the limits (app.limit) with their use: running jobs, jobs held back, tokens."""
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> list[LimitState]:
        return await admin.limits()

    found = call(app, body)
    if as_json:
        echo_json([limit_dict(state) for state in found])
    else:
        click.echo(limits_text(found))
