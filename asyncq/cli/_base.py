"""What every ``asyncq`` command shares: the group, app loading, options, failing, progress."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Awaitable, Callable
from typing import IO, Any, NoReturn, TypeVar

import anyio
import click
import msgspec

from .._app import App
from ..admin import Admin
from ..backends import DEFAULT_URL
from ..exceptions import AsyncqError, ConfigurationError, JobNotFound, ValidationError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "CommandError",
    "Progress",
    "app_options",
    "call",
    "duration",
    "echo_json",
    "fail",
    "fail_on",
    "load_app",
    "main",
    "parse_duration",
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
#: ``run`` interrupted before the worker listened for signals (128 + SIGINT)
EXIT_INTERRUPTED = 130


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
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        msg = f"cannot import module {module_name!r} for {path!r}: {exc}"
        raise click.UsageError(msg) from exc
    except Exception as exc:  # any import-time failure means the app cannot be loaded
        msg = f"importing module {module_name!r} for {path!r} failed: {type(exc).__name__}: {exc}"
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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

    Every verb fails through here (or ``fail_on``), so the prefix and the
    codes are the same everywhere; click's own usage errors also print
    ``Error:`` and exit 2.
    """
    for message in messages:
        click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def failure(exc: AsyncqError | CommandError) -> tuple[str, int]:
    """The operator's message and the exit code for an error that ends a command.

    2 for what the operator typed wrongly (an invalid payload, an unknown job
    name, a bad backend URL or one whose driver is missing); 1 for what failed
    (not found, the store down or answering wrongly, which the message names).
    """
    if isinstance(exc, CommandError):
        return str(exc), exc.code
    if isinstance(exc, ValidationError | ConfigurationError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, JobNotFound):
        return str(exc), EXIT_FAILED
    return f"{type(exc).__name__}: {exc}", EXIT_FAILED


def fail_on(*errors: AsyncqError | CommandError) -> NoReturn:
    """End the command on these errors: one line each, and the highest of their exit codes."""
    failures = [failure(exc) for exc in errors]
    fail(*(message for message, _ in failures), code=max(code for _, code in failures))


def call(app: App, fn: Callable[[Admin], Awaitable[T]]) -> T:
    """Run ``fn(app.admin)``, close the app, and end the command on an error (``fail_on``)."""

    async def run() -> T:
        try:
            return await fn(app.admin)
        finally:
            with anyio.CancelScope(shield=True):
                await app.close()

    try:
        result: T = runner(run)
    except (AsyncqError, CommandError) as exc:
        fail_on(exc)
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
        try:
            app.use_backend(backend)
        except ConfigurationError as exc:
            fail_on(exc)
    elif app.backend_spec is None and not os.environ.get("ASYNCQ_BACKEND"):
        click.echo(
            f"note: no backend given (--backend, ASYNCQ_BACKEND or App(backend=...)); "
            f"using {DEFAULT_URL} in {os.getcwd()}",
            err=True,
        )
    return app


_encoder = msgspec.json.Encoder(enc_hook=repr)


def echo_json(value: object) -> None:
    """Print ``value`` as one line of JSON (anything JSON cannot hold shows as its repr)."""
    click.echo(_encoder.encode(value).decode())


# -- durations ---------------------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``12h``, ``7d``, ``2w``, ``1h30m`` or a plain number.

    Raises:
        ValueError: anything else.
    """
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value >= 0 and value != float("inf"):
            return value
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
    return total


def duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """A click callback turning ``parse_duration`` text into seconds (``None`` stays ``None``)."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


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
