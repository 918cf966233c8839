"""The ``remove`` command: delete jobs by id, in any state but running.

A thin layer over ``Admin.remove``, as the other operator commands are: exit
0 when every job was removed, 1 when one was running (refused, with what to
do) or not found; the others are removed either way.
"""

from __future__ import annotations

from typing import Any

import click

from .._records import JobState
from ..admin import Admin
from ..exceptions import JobActive, JobNotFound
from ._base import Verb, app_options, call, echo_json, fail, open_app, say

__all__ = ["remove"]


@click.command(cls=Verb)
@app_options
@click.argument("job_ids", nargs=-1, required=True, metavar="ID...")
def remove(app_path: str, backend: str | None, as_json: bool, job_ids: tuple[str, ...]) -> None:
    """Delete jobs for good, in any state but running; their ids and keys are free again.

    A running job is refused: cancel it first (asyncq cancel ID), then remove it.
    """
    app = open_app(app_path, backend)

    async def body(admin: Admin) -> list[tuple[str, JobState | None, str]]:
        out: list[tuple[str, JobState | None, str]] = []
        for job_id, state in (await admin.remove(job_ids)).items():
            refusal = ""
            if state is JobState.ACTIVE:
                try:
                    job = await admin.job(job_id)
                except JobNotFound:  # it ended and went in the meantime
                    refusal = str(JobActive(job_id))
                else:
                    refusal = str(JobActive(job_id, job.name, job.queue))
            out.append((job_id, state, refusal))
        return out

    report: list[dict[str, Any]] = []
    problems: list[str] = []
    for job_id, state, refusal in call(app, body):
        if state is None:
            outcome = "not found"
            problems.append(f"no job with id {job_id!r}")
        elif state is JobState.ACTIVE:
            outcome = "running"
            problems.append(refusal)
        else:
            outcome = "removed"
            if not as_json:
                say(f"removed job {job_id} (it was {state.value})")
        report.append({"id": job_id, "state": state.value if state else None, "outcome": outcome})
    if as_json:
        echo_json(report)
    if problems:
        fail(*problems)
