"""The documentation's samples, found in the Markdown: what ``test_docs.py`` runs.

Every fenced block in ``README.md`` and ``docs/*.md`` whose language is
``python``, ``bash``, ``sh`` or ``console`` is a sample. The samples of one
page run in order, in one namespace and one directory, as a reader following
the page would run them. HTML comments on the lines just before a fence steer
a sample (they do not show on the site or on GitHub):

- ``<!-- not-run: REASON -->``: the block cannot run here (hours of
  benchmarks, the whole test suite); it is counted as skipped, with its reason.
- ``<!-- run-with: worker -->``: a Python block runs while a worker of
  ``app``, the page's app so far, runs as if in another shell: around the
  awaits of an async block (the statements before the first await define the
  app), or, for a blocking block, on the page's event loop while the block's
  own thread runs (its leading imports and definitions first).
- ``<!-- run-with: isolated -->``: a Python block runs on a copy of the page's
  namespace, so what it defines (another ``app``) does not leak into the next.
- ``<!-- run-with: subprocess -->``: a Python block runs in a fresh
  interpreter of its own, in the page's directory (it sets process-wide state,
  such as OpenTelemetry's global providers, or Django's settings).
- ``<!-- run-with: pytest -->``: a Python block is a test module: it is
  written to a file in the page's directory and pytest runs it there, in a
  fresh interpreter and in pytest-asyncio's auto mode (with the
  ``conftest.py`` an earlier block of the page wrote); each of its tests must
  pass, none skipped.
- ``<!-- run-with: burst -->``: every ``asyncq run`` of a shell block gets
  ``--burst`` (it works the jobs there are, then exits) instead of serving
  for ever.
- ``<!-- run-with: background -->``: every ``asyncq run`` of a shell block
  serves in the background, as in another shell, until the page ends (a
  command ending in ``&`` does too).
- ``<!-- given: NAME[, NAME] -->``: what a fragment takes as the reader's own
  (``app``, the payload types, a fixture): ``tests/docs_fixtures/NAME.py``
  runs just before the block, where the block runs (the page's namespace, or
  the fresh interpreter of a ``subprocess`` block); a ``pytest`` block loads
  it as a plugin (``-p NAME``) for the fixtures it defines.
- ``<!-- then: NAME[, NAME] -->``: ``tests/docs_fixtures/NAME.py`` runs just
  after the block, in the same place: it uses what the block defined (calls a
  view with a request, a program's ``main()``) and checks the outcome.
- ``<!-- serve: until="REGEX" times=N port=N stop=SIGINT exit=N -->``: the
  block serves until stopped. In a shell block, its first command (a
  ``pip install`` aside) starts, and the test waits for it to be ready: a line
  of its output matching ``REGEX`` (``times`` lines, 1 by default) and, with
  ``port``, the port accepting connections; the block's other commands run
  next; then the command is stopped with the ``stop`` signal (SIGINT, as
  Ctrl-C, by default) and must exit with ``exit`` (0), unless it ends in
  ``&``: it then serves on in the background until the page ends. ``port``
  names the port the block shows: a free one of this machine replaces it in
  the block's commands (a serving command that does not name it is given
  ``--port``), so that the test never depends on a fixed port. A Python block
  runs until a line it prints matches ``REGEX``, and is then cancelled.
  Waiting is bounded by ``SAMPLE_TIMEOUT`` of ``test_docs.py``.

A Python block whose first line is a comment naming a file (``# shop/jobs.py``,
``# conftest.py``) is also written to that file, so a later ``asyncq run
shop.jobs:app`` finds it. ``tests/docs_fixtures`` comes after the page's
directory on the import path: a page that does not write a ``shop`` package
of its own finds the reader's ``shop`` there (its jobs, a web service, a
sync site, billing, a nightly report, Django settings and models). Both are
namespace packages (no ``__init__.py``), so a page that writes only
``shop/views.py`` finds ``shop.jobs`` in the fixtures.

Shell commands run without a shell, split like a shell would, joined by
``&&`` or one a line; ``|`` pipes one into the next (each must succeed), and
``$(COMMAND)`` in an argument is replaced by what COMMAND prints. ``asyncq``
and ``python`` are this interpreter's; another program (``curl``, ``jq``) must
be installed. ``export NAME=VALUE`` sets the variable for the page's later
commands and blocks. In a console transcript (``$ `` before each command), a
job id that an earlier command printed in the transcript stands for the id
that command printed when run here, so ``asyncq job shop:app ID`` looks up the
job the page made. A ``pip install`` is checked, not run: CI installs the
requirements itself, so the test checks that what it names exists (a
requirements file, an extra of asyncq's ``pyproject.toml``, an installed
distribution); ``tests/test_packaging.py`` checks what the package declares.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What fragments take as the reader's own: ``given`` and ``then`` files, and
#: the reader's ``shop`` package (on the import path after the page's directory).
FIXTURES = ROOT / "tests" / "docs_fixtures"

#: The pages whose samples run.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell"}
LANGUAGES["console"] = "console"

RUN_WITH = {"worker", "isolated", "subprocess", "pytest", "burst", "background"}

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_DIRECTIVE = re.compile(
    r"^\s*<!--\s*(?P<word>not-run|run-with|given|then|serve)\s*:\s*(?P<arg>.*?)\s*-->\s*$"
)
_FILE_HEADER = re.compile(r"^# (?P<path>[\w/]+\.py)\s*$")
_SIGNALS = {"SIGINT", "SIGTERM"}


@dataclass(frozen=True)
class Serve:
    """How a serving sample is waited for and stopped (``<!-- serve: ... -->``)."""

    until: str | None = None
    times: int = 1
    port: int | None = None
    stop: str = "SIGINT"
    exit: int = 0

    @classmethod
    def parse(cls, text: str, where: str) -> Serve:
        values: dict[str, str] = {}
        for word in shlex.split(text):
            key, equals, value = word.partition("=")
            if not equals or key not in {"until", "times", "port", "stop", "exit"}:
                pytest.fail(f"{where}: serve takes until=, times=, port=, stop=, exit=: {word!r}")
            values[key] = value
        serve = cls(
            until=values.get("until"),
            times=int(values.get("times", "1")),
            port=int(values["port"]) if "port" in values else None,
            stop=values.get("stop", "SIGINT"),
            exit=int(values.get("exit", "0")),
        )
        if serve.until is None and serve.port is None:
            pytest.fail(f"{where}: serve needs until= or port=, to know when it is ready")
        if serve.stop not in _SIGNALS:
            pytest.fail(f"{where}: serve stops with one of {sorted(_SIGNALS)}")
        return serve

    def ready(self, lines: list[str]) -> bool:
        """Whether the output so far says the command is ready (``until``, ``times``)."""
        if self.until is None:
            return True
        pattern = re.compile(self.until)
        return sum(1 for line in lines if pattern.search(line)) >= self.times


@dataclass
class Sample:
    """One fenced block of a page."""

    page: Path
    line: int
    kind: str  # "python", "shell" or "console"
    source: str
    skip: str | None = None
    run_with: set[str] = field(default_factory=set)
    given: list[str] = field(default_factory=list)
    then: list[str] = field(default_factory=list)
    serve: Serve | None = None

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    @property
    def file(self) -> str | None:
        """The file a Python block says it is, from its first line."""
        first = self.source.split("\n", 1)[0]
        match = _FILE_HEADER.match(first)
        return match["path"] if match and self.kind == "python" else None


def _names(arg: str) -> list[str]:
    return [name.strip() for name in arg.split(",") if name.strip()]


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
                word, arg = directive["word"], directive["arg"]
                if word == "not-run":
                    sample.skip = arg or "not run"
                elif word == "run-with":
                    sample.run_with.update(_names(arg))
                elif word == "given":
                    sample.given = _names(arg) + sample.given
                elif word == "then":
                    sample.then = _names(arg) + sample.then
                else:
                    sample.serve = Serve.parse(arg, sample.where)
                above -= 1
            _check(sample)
            found.append(sample)
        i = end + 1
    return found


def _check(sample: Sample) -> None:
    unknown = sample.run_with - RUN_WITH
    if unknown:
        pytest.fail(f"{sample.where}: unknown run-with {sorted(unknown)}")
    for name in sample.given + sample.then:
        if not (FIXTURES / f"{name}.py").is_file():
            pytest.fail(f"{sample.where}: no tests/docs_fixtures/{name}.py")
    if sample.kind != "python" and (sample.given or sample.then):
        pytest.fail(f"{sample.where}: given and then are for Python blocks")
    if "pytest" in sample.run_with and (sample.then or sample.serve):
        pytest.fail(f"{sample.where}: a pytest block takes no then or serve")
    if sample.kind == "python" and sample.serve and (sample.serve.port or not sample.serve.until):
        pytest.fail(f"{sample.where}: a Python block serves until=REGEX (no port)")


#: Counts of samples (and shell commands) run and skipped, for the summary line.
TALLY = pytest.StashKey[dict[str, int]]()


class Command(NamedTuple):
    """One shell command of a sample, the status it should end with, and its shown output."""

    text: str
    status: int = 0
    output: tuple[str, ...] = ()


def commands(sample: Sample) -> list[Command]:
    """A shell sample's commands, the exit status each should end with, and their output.

    One command a line, comments cut; in a console transcript, the lines after
    ``$ `` (the others are output, where ``[exit N]`` gives the status).
    """
    out: list[Command] = []
    for raw in sample.source.split("\n"):
        line = raw
        if sample.kind == "console":
            status = re.fullmatch(r"\[exit (\d+)\]", line.strip())
            if status and out:
                out[-1] = out[-1]._replace(status=int(status[1]))
            if not line.startswith("$ "):
                if out and line.strip() and not status:
                    out[-1] = out[-1]._replace(output=(*out[-1].output, line))
                continue  # the transcript's output
            line = line[2:]
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.extend(Command(part.strip()) for part in line.split("&&"))
    return out


#: A job id as asyncq prints it.
JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")


def learn_ids(shown: tuple[str, ...], printed: str) -> dict[str, str]:
    """The ids of a transcript's output, each paired with the one printed at the same place.

    A shown line with ids matches a printed line that is the same but for its
    ids; other lines (timestamps, tables) pair nothing.
    """
    pairs: dict[str, str] = {}
    for line in shown:
        ids = JOB_ID.findall(line)
        if not ids:
            continue
        pattern = re.compile(
            "".join(
                "([0-9a-f]{32})" if JOB_ID.fullmatch(part) else re.escape(part)
                for part in re.split(r"(\b[0-9a-f]{32}\b)", line.strip())
            )
        )
        for printed_line in printed.splitlines():
            match = pattern.fullmatch(printed_line.strip())
            if match:
                pairs.update(zip(ids, match.groups(), strict=True))
                break
    return pairs
