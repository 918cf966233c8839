"""The ``limits`` and ``circuit`` commands: flow control as the store keeps it."""

from __future__ import annotations

from typing import Any

import click

from .._records import CircuitState, LimitState
from ..admin import Admin
from ._base import Verb, app_options, call, echo_json, open_app, say
from ._render import circuit_dict, circuits_text, limits_text

__all__ = ["circuit", "limit_dict", "limits"]


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
    """List the limits (app.limit) and circuits (app.circuit) with their current use.

    Per limit (per key value of a keyed one): jobs running, jobs held back,
    tokens in the rate's bucket; per circuit: its state and since when.
    """
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> tuple[list[LimitState], list[CircuitState]]:
        return await admin.limits(), await admin.circuits()

    found, circuits = call(app, body)
    if as_json:
        echo_json(
            {
                "limits": [limit_dict(state) for state in found],
                "circuits": [circuit_dict(state) for state in circuits],
            }
        )
    else:
        click.echo(limits_text(found))
        if circuits:
            click.echo("")
            click.echo(circuits_text(circuits))


@click.group()
def circuit() -> None:
    """Open or close a circuit breaker (app.circuit) by hand."""


def _set(app_path: str, backend: str | None, as_json: bool, name: str, open_: bool) -> None:
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> list[CircuitState]:
        if open_:
            return await admin.open_circuit(name)
        return await admin.close_circuit(name)

    changed = call(app, body)
    if as_json:
        echo_json([circuit_dict(state) for state in changed])
    elif open_:
        say(f"opened circuit {name!r}: its jobs wait until it half-opens")
    else:
        say(f"closed circuit {name!r}: its failures are forgotten")


@circuit.command("open", cls=Verb)
@app_options
@click.argument("name")
def open_circuit(app_path: str, backend: str | None, as_json: bool, name: str) -> None:
    """Open circuit NAME now: its jobs wait (no attempts used) until it half-opens."""
    _set(app_path, backend, as_json, name, True)


@circuit.command("close", cls=Verb)
@app_options
@click.argument("name")
def close_circuit(app_path: str, backend: str | None, as_json: bool, name: str) -> None:
    """Close circuit NAME and forget its failures."""
    _set(app_path, backend, as_json, name, False)
