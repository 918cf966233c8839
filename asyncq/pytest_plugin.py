"""asyncq's pytest plugin, registered through the ``pytest11`` entry point.

Fixtures (see ``docs/testing.md``):

- ``asyncq_app``: the app under test. Override it in a ``conftest.py``, or
  name it in the ini file (``asyncq_app = "myproject.jobs:app"``); otherwise
  a throwaway ``App("test")`` on an in-process store.
- ``jobs``: ``asyncq_app`` on a fresh in-process store for the test, its
  backend restored afterwards. It records enqueues (``assert_enqueued``),
  runs jobs (``await jobs.run_until_idle()``, ``run_until_complete``) and
  fast-forwards delays and retries (``jobs.clock.advance(60)``).

The fixtures are synchronous, so they work under pytest-asyncio (strict or
auto mode) and anyio's plugin alike: only the test's own ``await``\\ s need a
loop, and the in-process store serves any loop.

While pytest runs, an app with no backend (no ``backend=``, no
``ASYNCQ_BACKEND``) refuses to fall back to ``./asyncq.db``: a test that
forgot to isolate fails and says what to use. The ini option
``asyncq_allow_default_backend = true`` turns that off.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

from . import _app
from ._app import App
from ._testing_jobs import ANY, Jobs, VirtualClock
from .exceptions import ConfigurationError

__all__ = ["ANY", "Jobs", "VirtualClock", "asyncq_app", "jobs"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("asyncq_app", "the app under test, as module:attribute", default="")
    parser.addini(
        "asyncq_allow_default_backend",
        "let an app with no backend use ./asyncq.db during tests",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getini("asyncq_allow_default_backend"):
        _app.default_guard = _refuse_default
        config.add_cleanup(_allow_default)


def _allow_default() -> None:
    _app.default_guard = None


def _refuse_default(app: App) -> None:
    msg = (
        f"app {app.name!r} has no backend, and under pytest asyncq does not fall back to "
        "./asyncq.db: use the `jobs` fixture (asyncq's pytest plugin; override `asyncq_app` "
        "to give it your app), `async with asyncq.testing.in_memory(app):`, or "
        "App(backend='memory://'); set ASYNCQ_BACKEND for a real store, or the ini option "
        "asyncq_allow_default_backend = true"
    )
    raise ConfigurationError(msg)


@pytest.fixture
def asyncq_app(request: pytest.FixtureRequest) -> App:
    """The app under test: the ini option ``asyncq_app``, else a throwaway one."""
    spec = str(request.config.getini("asyncq_app") or "")
    if not spec:
        return App("test", backend="memory://", telemetry=False)
    module_name, _, attribute = spec.partition(":")
    app = getattr(importlib.import_module(module_name), attribute or "app", None)
    if not isinstance(app, App):
        msg = f"the ini option asyncq_app = {spec!r} does not name an asyncq App"
        raise pytest.UsageError(msg)
    return app


@pytest.fixture
def jobs(asyncq_app: App) -> Iterator[Jobs]:
    """``asyncq_app`` on a fresh in-process store for this test (``asyncq.pytest_plugin.Jobs``)."""
    recorder = Jobs(asyncq_app)
    recorder._install()
    try:
        yield recorder
    finally:
        recorder._restore()
