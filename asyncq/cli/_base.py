"""What every ``asyncq`` command shares: the group, app loading, options, failing, progress.

Whatever a verb prints in text mode goes through ``printable`` (``say``, ``fail``,
the tables of ``_render``), and whatever it raises ends as ``Error: ...`` lines
with the documented exit code, never as a traceback (``guarded``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import anyio
import click
import msgspec

from .._app import App
from ..admin import Admin
from ..backends import DEFAULT_URL
from ..exceptions import AsyncqError, ConfigurationError, JobNotFound, ValidationError
from ._render import Unshowable, json_printable, printable

__all__ = [
    "EXIT_FAILED",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandError",
    "Progress",
    "Verb",
    "app_options",
    "call",
    "duration",
    "echo_json",
    "fail",
    "guarded",
    "leaves",
    "load_app",
    "main",
    "parse_duration",
    "say",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# The exit codes of every verb, ``run`` included (the table is in docs/cli.md).
# click exits 2 on its own usage errors, so what the operator typed wrongly is 2.
#: the operation failed: a job not found or not in a state the verb acts on,
#: the store down or answering wrongly
EXIT_FAILED = 1
#: usage: bad arguments, payload, job name, queue or backend URL; an app that cannot be loaded
EXIT_USAGE = 2
#: ``run``: the worker stopped after a failure classified fatal (``fatal_on``,
#: ``App.classify``); its supervisor should restart it
EXIT_FATAL = 3
#: ``run`` interrupted before the worker listened for signals (128 + SIGINT)
EXIT_INTERRUPTED = 130


def where_raised(exc: BaseException) -> str:
    """``file, line N`` of the code that raised ``exc``: the user's line, not the importer's."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}, line {exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    # The innermost frame of the user's own code: not Python's, an installed
    # library's or asyncq's, which the user's line called into.
    theirs = (str(Path(__file__).parent.parent), sys.prefix, sys.base_prefix, "<frozen ")
    mine = [f for f in frames if not f.filename.startswith(theirs)]
    last = (mine or frames)[-1]
    return f"{last.filename}, line {last.lineno}"


def load_app(path: str) -> App:
    """Import ``module:attribute`` (the current directory first on ``sys.path``) and return the App.

    Raises:
        click.UsageError: the module cannot be imported, the attribute is
            missing, or it is not an ``asyncq.App``.
    """
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        msg = f"expected MODULE:APP (for example myservice.jobs:app), got {path!r}"
        raise click.UsageError(msg)
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").strip("./").replace(os.sep, ".").replace("/", ".")
        msg = (
            f"{path!r} names a file: give the module's dotted name, as Python imports it "
            f"(for example {dotted}:{attr}), run from the directory it is imported from"
        )
        raise click.UsageError(msg)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            msg = f"cannot import module {module_name!r} for {path!r}: {exc}"
        else:  # the module exists; an import in it failed
            msg = (
                f"importing module {module_name!r} for {path!r} failed at {where_raised(exc)}: "
                f"{type(exc).__name__}: {exc}"
            )
        raise click.UsageError(msg) from exc
    except Exception as exc:  # any import-time failure means the app cannot be loaded
        msg = (
            f"importing module {module_name!r} for {path!r} failed at {where_raised(exc)}: "
            f"{type(exc).__name__}: {exc}"
        )
        raise click.UsageError(msg) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attr!r}"
            raise click.UsageError(msg) from None
    if not isinstance(obj, App):
        msg = f"{path!r} is a {type(obj).__name__}, not an asyncq.App"
        raise click.UsageError(msg)
    return obj


# How Python hands over the bytes of an argument that were not UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class Verb(click.Command):
    """A verb of ``asyncq``: it refuses arguments that are not UTF-8 before it parses them.

    Python hands such bytes over as lone surrogates, which no store can hold and
    no terminal can print; refusing them here is a usage error (exit 2) naming the
    argument, instead of an encoding error from deep inside a backend.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for arg in args:
            if _SURROGATE.search(arg):
                msg = f"argument '{printable(arg)}' is not valid UTF-8"
                raise click.UsageError(msg, ctx)
        return super().parse_args(ctx, args)


class _Group(click.Group):
    """The ``asyncq`` group: every verb it runs is ``guarded``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with guarded():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        with guarded():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncq")
def main() -> None:
    """asyncq: run workers and operate queues.

    Exit codes: 0 success; 1 the operation failed (a job not found or in the
    wrong state, the store down); 2 usage errors (bad arguments, an invalid
    payload, a bad backend URL, an app that cannot be loaded).
    """


# -- running a command's coroutine ------------------------------------------------------


def _new_loop(fn: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(fn)


#: Runs each command's coroutine, on a new event loop. Tests swap in
#: ``anyio.from_thread.run`` to run commands on their own loop and backend.
runner: Callable[[Callable[[], Awaitable[Any]]], Any] = _new_loop


class CommandError(Exception):
    """A command cannot do what was asked: the message for the operator, and the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def fail(*messages: str, code: int = EXIT_FAILED) -> NoReturn:
    """End the command: each message as one ``Error: ...`` line on stderr, then exit ``code``.

    Every verb fails through here (what it raises too, through ``guarded``), so
    the prefix and the codes are the same everywhere; click's own usage errors
    also print ``Error:`` and exit 2.
    """
    for message in messages:
        click.echo(f"Error: {printable(message)}", err=True)
    sys.exit(code)


def say(message: str, *, err: bool = False) -> None:
    """Print one line for the operator, made ``printable`` (names come from the store)."""
    click.echo(printable(message), err=err)


def failure(exc: BaseException, hint: str = "") -> tuple[str, int]:
    """The operator's message and the exit code for an error that ends a command.

    2 for what the operator typed wrongly (an invalid payload, an unknown job
    name, a bad backend URL or one whose driver is missing); 1 for what failed
    (not found, the store down or answering wrongly, which the message names).
    Anything but asyncq's own errors exits 1, named by its type, with ``hint``
    (what most likely caused it) after it.
    """
    if isinstance(exc, CommandError):
        return str(exc), exc.code
    if isinstance(exc, ValidationError | ConfigurationError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, JobNotFound | Unshowable):
        return str(exc), EXIT_FAILED
    if isinstance(exc, AsyncqError):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILED
    return f"unexpected {type(exc).__name__}: {exc}{f' ({hint})' if hint else ''}", EXIT_FAILED


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


# How click shows its errors as one ``Error: ...`` line (with the usage above it).
_ERROR_LINE = (click.ClickException.show, click.UsageError.show)


@contextmanager
def guarded(hint: str = "") -> Iterator[None]:
    """The last line of defence: what a verb raises ends it as ``Error: ...`` lines.

    click's own errors keep their usage text and exit 2, with what the operator
    typed made ``printable``; asyncq's errors get their documented code; any other
    exception exits 1 with one line naming it (and the job, when a record cannot
    be shown), followed by ``hint``.
    """
    try:
        yield
    except click.ClickException as exc:
        message = exc.format_message()
        if printable(message) == message or type(exc).show not in _ERROR_LINE:
            raise  # nothing to escape, or not an ``Error:`` line (the help of a bare verb)
        if isinstance(exc, click.UsageError):
            raise click.UsageError(printable(message), exc.ctx) from None
        raise click.ClickException(printable(message)) from None
    except (click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence, worded below
        # Task groups wrap what their tasks raised; the operator wants one line each.
        found = leaves(exc) if isinstance(exc, ExceptionGroup) else [exc]
        failures = [failure(leaf, hint) for leaf in found]
        fail(*(message for message, _ in failures), code=max(code for _, code in failures))


def call(app: App, fn: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``fn(app.admin)``, close the app, and end the command on an error (``guarded``)."""

    async def run() -> T:
        try:
            return await fn(app.admin)
        finally:
            with anyio.CancelScope(shield=True):
                await app.close()

    # What the store answers is decoded inside ``fn``: an error no one expected
    # there is most likely a record this version cannot read.
    with guarded(hint="most likely a record in the store this asyncq cannot read"):
        result: T = runner(run)
    return result


# -- options ---------------------------------------------------------------------------


def app_options(fn: F) -> F:
    """``MODULE:APP``, ``--backend URL`` (env ``ASYNCQ_BACKEND``) and ``--json``."""
    fn = click.option("--json", "as_json", is_flag=True, help="Print JSON (one document a line).")(
        fn
    )
    fn = click.option(
        "--backend",
        envvar="ASYNCQ_BACKEND",
        metavar="URL",
        help="Backend URL, overriding the app's (env ASYNCQ_BACKEND).",
    )(fn)
    return click.argument("app_path", metavar="MODULE:APP")(fn)


def open_app(app_path: str, backend: str | None) -> App:
    """Load the app and point it at ``backend`` when given.

    An app with no backend anywhere gets the default SQLite file in the
    current directory: said on stderr, since an operator looking at an empty
    store is most likely looking at the wrong one.
    """
    app = load_app(app_path)
    if backend:
        app.use_backend(backend)  # a bad URL: a ConfigurationError, exit 2 (``guarded``)
    elif app.backend_spec is None and not os.environ.get("ASYNCQ_BACKEND"):
        say(
            f"note: no backend given (--backend, ASYNCQ_BACKEND or App(backend=...)); "
            f"using {DEFAULT_URL} in {os.getcwd()}",
            err=True,
        )
    return app


_encoder = msgspec.json.Encoder(enc_hook=repr)


def echo_json(value: object) -> None:
    """Print ``value`` as one line of JSON (anything JSON cannot hold shows as its repr).

    Strings keep their values: the characters a terminal would act on are
    ``\\uXXXX`` escapes, as JSON allows (``json_printable``).
    """
    click.echo(json_printable(_encoder.encode(value).decode()))


# -- durations ---------------------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: The longest duration the commands take: a time that far ahead or back is still
#: a date every store and ``datetime`` can hold.
MAX_DURATION = 100 * 365.25 * 86_400.0


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``12h``, ``7d``, ``2w``, ``1h30m`` or a plain number.

    Raises:
        ValueError: anything else, or a duration of more than 100 years.
    """
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value >= 0 and value != float("inf"):
            return _at_most_max(text, value)
        msg = f"{text!r} is not a duration of zero or more seconds"
        raise ValueError(msg)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match[1]) * _UNITS[match[2]]
        pos = match.end()
    if pos == 0 or pos != len(text):
        msg = f"{text!r} is not a duration: use 30s, 15m, 12h, 7d, 2w, 1h30m or seconds"
        raise ValueError(msg)
    return _at_most_max(text, total)


def _at_most_max(text: str, seconds: float) -> float:
    if seconds > MAX_DURATION:
        msg = f"{text!r} is a duration of more than 100 years"
        raise ValueError(msg)
    return seconds


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A click callback turning ``parse_duration`` text into seconds (``None`` stays ``None``)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def duration_option(*names: str, **attrs: Any) -> Callable[[F], F]:
    """A ``click.option`` taking a duration (``30s``, ``5m``, ``2h``, ``7d``) as seconds."""
    return click.option(*names, metavar="DURATION", callback=duration, **attrs)


def _meta_pairs(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> dict[str, str] | None:
    """A click callback turning repeated ``KEY=VALUE`` into a dict (``None`` when none given)."""
    if not value:
        return None
    pairs: dict[str, str] = {}
    for item in value:
        key, sep, text = item.partition("=")
        if not sep or not key:
            msg = f"{item!r} is not KEY=VALUE (for example tenant=acme)"
            raise click.BadParameter(msg, ctx, param)
        if key in pairs:
            msg = f"key {key!r} is given twice"
            raise click.BadParameter(msg, ctx, param)
        pairs[key] = text
    return pairs


def meta_option(help: str) -> Callable[[F], F]:
    """A repeatable ``--meta KEY=VALUE``, handed over as a dict of strings (or ``None``)."""
    return click.option(
        "--meta", metavar="KEY=VALUE", multiple=True, callback=_meta_pairs, help=help
    )


def choice_option(
    name: str, choices: Sequence[str], default: str | None = None, **attrs: Any
) -> Callable[[F], F]:
    """A ``click.option`` taking one of ``choices``; the default is the first unless named."""
    chosen = choices[0] if default is None else default
    return click.option(
        name, type=click.Choice(list(choices)), default=chosen, show_default=True, **attrs
    )


def batch_option(most: int, default: int) -> Callable[[F], F]:
    """The hidden ``--batch`` of a verb that works through many jobs: how many per call."""
    return click.option(
        "--batch", type=click.IntRange(1, most), default=default, show_default=True, hidden=True
    )


# -- progress ------------------------------------------------------------------------------


class Progress:
    """A running count on one line of stderr for long operations, only when stderr is a terminal.

    Args:
        label: what is counted (``retried``).
        stream: where to write (default: stderr).
    """

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.shown = False

    def __call__(self, count: int) -> None:
        if self.enabled:
            self.stream.write(f"\r{self.label} {count}...")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        """Clear the progress line, so the final message stands alone."""
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False
