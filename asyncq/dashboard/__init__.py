"""A web dashboard for an app's queues, jobs and workers: ``dashboard(app)`` is an ASGI app.

::

    from asyncq.dashboard import dashboard

    fastapi_app.mount("/queues", dashboard(app, authorize=lambda request: is_admin(request)))

or, standalone, ``asyncq dashboard myservice.jobs:app --token $TOKEN``. It needs
the ``dashboard`` extra (``pip install 'asyncq[dashboard]'``). See docs/dashboard.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from .._app import App
    from ._security import Authorize

__all__ = ["dashboard"]

_MISSING = (
    "the dashboard needs the 'dashboard' extra ({name} is not installed): "
    "pip install 'asyncq[dashboard]'"
)


def dashboard(
    app: App,
    *,
    read_only: bool = False,
    authorize: Authorize | None = None,
    token: str | None = None,
    secret: bytes | None = None,
) -> Starlette:
    """The dashboard of ``app`` as an ASGI app, to serve or to mount under any path.

    Args:
        app: whose queues, jobs and workers it shows; its actions touch only
            this app's queues.
        read_only: show everything, change nothing (no action buttons; every
            POST refused with 403).
        authorize: called with each request (a Starlette ``Request``); a false
            answer (or an awaitable of one) refuses it with 403. Use it to let
            only your service's admins in when mounted.
        token: a shared secret to sign in with (the login form sets a session
            cookie) or to send as ``Authorization: Bearer <token>``; what
            ``asyncq dashboard --token`` sets.
        secret: the key session cookies are signed with (default: random per
            process; give one to keep sessions across restarts and processes).

    Raises:
        ConfigurationError: the ``dashboard`` extra is not installed.
    """
    for module in ("starlette", "jinja2"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ConfigurationError(_MISSING.format(name=module)) from exc
    from ._app import Dashboard
    from ._security import Guard

    guard = Guard(token=token, authorize=authorize, secret=secret)
    return Dashboard(app, read_only=read_only, guard=guard).asgi()
