"""The ``dashboard`` command: serve an app's web dashboard with uvicorn."""

from __future__ import annotations

import secrets

import click

from ._base import EXIT_USAGE, CommandError, Verb, open_app, say

__all__ = ["dashboard"]


@click.command(cls=Verb)
@click.argument("app_path", metavar="MODULE:APP")
@click.option(
    "--backend",
    envvar="ASYNCQ_BACKEND",
    metavar="URL",
    help="Backend URL, overriding the app's (env ASYNCQ_BACKEND).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8181, show_default=True)
@click.option("--read-only", is_flag=True, help="Show everything, change nothing.")
@click.option(
    "--token",
    envvar="ASYNCQ_DASHBOARD_TOKEN",
    metavar="TOKEN",
    help="Ask visitors for this token (env ASYNCQ_DASHBOARD_TOKEN).",
)
def dashboard(
    app_path: str,
    backend: str | None,
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
) -> None:
    """Serve the web dashboard of MODULE:APP (needs the 'dashboard' extra).

    It listens on 127.0.0.1 unless told otherwise; on any other address, give
    a --token (or --read-only) so that not everyone on the network can act.
    """
    try:
        import uvicorn
    except ImportError:
        raise CommandError(
            "the dashboard needs the 'dashboard' extra (uvicorn is not installed): "
            "pip install 'asyncq[dashboard]'",
            EXIT_USAGE,
        ) from None
    from ..dashboard import dashboard as make_dashboard

    app = open_app(app_path, backend)
    if host not in ("127.0.0.1", "localhost", "::1") and not token and not read_only:
        say(
            f"warning: the dashboard listens on {host} with no --token: anyone who can reach "
            "it can retry, cancel and purge jobs",
            err=True,
        )
    asgi = make_dashboard(app, read_only=read_only, token=token, secret=secrets.token_bytes(32))
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    say(f"asyncq dashboard for {app.name!r} on http://{shown}:{port}/", err=True)
    uvicorn.run(asgi, host=host, port=port, log_level="warning", lifespan="off")
