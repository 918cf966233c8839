"""Where a request came from and where an answer may send the browser back to."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["here", "here_of", "safe_next", "under"]


def here(request: Request) -> str:
    """The request's path relative to the dashboard's root, with its query (for ``next``)."""
    root = request.scope.get("root_path") or ""
    path = request.url.path[len(root) :] if request.url.path.startswith(root) else request.url.path
    query = request.url.query
    return quote(path or "/", safe="/") + (f"?{query}" if query else "")


def here_of(request: Request, path: str) -> str:
    root = request.scope.get("root_path") or ""
    return path[len(root) :] if root and path.startswith(root) else path


def safe_next(value: str | None) -> str:
    """A path inside the dashboard to go back to; anything else (another site) is ``/``."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def under(request: Request, path: str) -> str:
    return (request.scope.get("root_path") or "") + safe_next(path)
