"""The documentation's samples, found in the Markdown: what ``test_docs.py`` runs.

Every fenced block in ``README.md`` and ``docs/*.md`` whose language is
``python``, ``bash``, ``sh`` or ``console`` is a sample. The samples of one
page run in order, in one namespace and one directory, as a reader following
the page would run them. HTML comments on the lines just before a fence steer
a sample (they do not show on the site or on GitHub):

- ``<!-- not-run: REASON -->``: the block is deliberately partial (a fragment
  of a bigger program, a command that needs a cloud account); it is counted as
  skipped, with its reason.
- ``<!-- run-with: worker -->``: a Python block runs inside
  ``async with app.worker():``, ``app`` being the page's app so far, as if a
  worker ran in another shell.
- ``<!-- run-with: isolated -->``: a Python block runs on a copy of the page's
  namespace, so what it defines (another ``app``) does not leak into the next.
- ``<!-- run-with: subprocess -->``: a Python block runs in a fresh
  interpreter of its own, in the page's directory (it sets process-wide state,
  such as OpenTelemetry's global providers).
- ``<!-- run-with: burst -->``: every ``asyncq run`` of a shell block gets
  ``--burst`` (it works the jobs there are, then exits) instead of serving
  for ever.
- ``<!-- run-with: background -->``: every ``asyncq run`` of a shell block
  serves in the background, as in another shell, until the page ends (a
  command ending in ``&`` does too).

A Python block whose first line is a comment naming a file (``# shop/jobs.py``)
is also written to that file, so a later ``asyncq run shop.jobs:app`` finds
it. Shell commands run without a shell, split like a shell would, joined by
``&&`` or one a line; ``asyncq`` and ``python`` are this interpreter's. A
``pip install`` is counted as skipped: CI installs the same requirements
itself, and ``tests/test_packaging.py`` checks what the package declares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The pages whose samples run.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell"}
LANGUAGES["console"] = "console"

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*(?P<word>not-run|run-with)\s*:\s*(?P<arg>.*?)\s*-->\s*$")
_FILE_HEADER = re.compile(r"^# (?P<path>[\w/]+\.py)\s*$")


@dataclass
class Sample:
    """One fenced block of a page."""

    page: Path
    line: int
    kind: str  # "python", "shell" or "console"
    source: str
    skip: str | None = None
    run_with: set[str] = field(default_factory=set)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def file(self) -> str | None:
        """The file a Python block says it is, from its first line."""
        first = self.source.split("\n", 1)[0]
        match = _FILE_HEADER.match(first)
        return match["path"] if match and self.kind == "python" else None


def samples(page: Path) -> list[Sample]:
    """The page's samples, in order, with the directives just above each."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found: list[Sample] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        kind = LANGUAGES.get(fence["lang"])
        if kind is not None:
            indent = len(fence["indent"])
            body = "\n".join(line[indent:] for line in lines[i + 1 : end])
            sample = Sample(page, i + 1, kind, body)
            above = i - 1
            while above >= 0 and (directive := _DIRECTIVE.match(lines[above])):
                if directive["word"] == "not-run":
                    sample.skip = directive["arg"] or "not run"
                else:
                    sample.run_with.update(a.strip() for a in directive["arg"].split(","))
                above -= 1
            unknown = sample.run_with - {"worker", "isolated", "subprocess", "burst", "background"}
            if unknown:
                pytest.fail(f"{sample.where}: unknown run-with {sorted(unknown)}")
            found.append(sample)
        i = end + 1
    return found


#: Counts of samples (and shell commands) run and skipped, for the summary line.
TALLY = pytest.StashKey[dict[str, int]]()


def commands(sample: Sample) -> list[tuple[str, int]]:
    """A shell sample's commands and the exit status each should end with.

    One command a line, comments cut; in a console transcript, the lines after
    ``$ `` (the others are output, where ``[exit N]`` gives the status).
    """
    out: list[tuple[str, int]] = []
    for raw in sample.source.split("\n"):
        line = raw
        if sample.kind == "console":
            status = re.fullmatch(r"\[exit (\d+)\]", line.strip())
            if status and out:
                out[-1] = (out[-1][0], int(status[1]))
            if not line.startswith("$ "):
                continue  # the transcript's output
            line = line[2:]
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.extend((part.strip(), 0) for part in line.split("&&"))
    return out
