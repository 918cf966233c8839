"""Who may look and who may act: sessions, the token login, CSRF tokens and the Origin check.

A session is a random id in a signed cookie (HMAC-SHA256 with the dashboard's
secret, ``HttpOnly``, ``SameSite=Strict``). The CSRF token of a session is an
HMAC of its id, so it needs no server-side state and dies with the cookie.
Every action is a POST that must carry the session's token and, when the
browser sends one, an ``Origin`` (else ``Referer``) of the dashboard's own host.
With a token (the CLI's ``--token``), a session becomes signed in by posting
the token to the login form, or a request carries ``Authorization: Bearer T``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["COOKIE", "Authorize", "Guard", "Session"]

#: The session cookie's name.
COOKIE = "asyncq_dashboard"

#: ``authorize(request)``: whether this request may see the dashboard (sync or async).
Authorize = Callable[["Request"], bool | Awaitable[bool]]


class Session:
    """One browser's session: its id and whether it signed in with the token."""

    __slots__ = ("fresh", "id", "signed_in")

    def __init__(self, session_id: str, *, signed_in: bool, fresh: bool) -> None:
        self.id = session_id
        self.signed_in = signed_in
        self.fresh = fresh


class Guard:
    """The dashboard's checks, from its options.

    Args:
        token: the shared secret a visitor signs in with (``None``: no sign-in).
        authorize: the host application's hook (``None``: everyone may look).
        secret: the key cookies are signed with (default: random per process,
            so sessions end when the dashboard restarts).
    """

    def __init__(
        self,
        *,
        token: str | None,
        authorize: Authorize | None,
        secret: bytes | None = None,
    ) -> None:
        self.token = token or None
        self.authorize = authorize
        self._key = secret if secret is not None else secrets.token_bytes(32)

    @staticmethod
    def new_id() -> str:
        """A new random session id."""
        return secrets.token_urlsafe(18)

    # -- signing -------------------------------------------------------------------

    def _mac(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def session(self, request: Request) -> Session:
        """The request's session from its cookie, or a new one (``fresh``) if it has none valid."""
        value = request.cookies.get(COOKIE, "")
        body, _, mac = value.rpartition(".")
        if body and hmac.compare_digest(mac, self._mac(body)):
            session_id, _, flag = body.partition(":")
            return Session(session_id, signed_in=flag == "in", fresh=False)
        return Session(self.new_id(), signed_in=False, fresh=True)

    def set_cookie(self, response: Response, request: Request, session: Session) -> None:
        """Store ``session`` in the response's cookie, scoped to the dashboard's path."""
        body = f"{session.id}:{'in' if session.signed_in else 'out'}"
        response.set_cookie(
            COOKIE,
            f"{body}.{self._mac(body)}",
            path=(request.scope.get("root_path") or "") + "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def csrf_token(self, session: Session) -> str:
        """The token every form of this session carries."""
        return self._mac(f"csrf:{session.id}")

    # -- checking ------------------------------------------------------------------

    def bearer_ok(self, request: Request) -> bool:
        """Whether the request carries ``Authorization: Bearer <token>``."""
        if self.token is None:
            return False
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), self.token)

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` is the token (compared in constant time)."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def signed_in(self, request: Request, session: Session) -> bool:
        """Whether the request may pass the token check: no token set, signed in, or bearer."""
        return self.token is None or session.signed_in or self.bearer_ok(request)

    async def authorized(self, request: Request) -> bool:
        """What the host's ``authorize`` hook says (``True`` without one)."""
        if self.authorize is None:
            return True
        answer = self.authorize(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)

    @staticmethod
    def same_origin(request: Request) -> bool:
        """Whether the POST comes from the dashboard's own pages, as far as the browser says.

        ``Origin`` (else ``Referer``) must name the request's host; a browser
        that sends neither is told apart by ``Sec-Fetch-Site``. A client that is
        no browser (no such headers) passes here and still needs the CSRF token.
        """
        source = request.headers.get("origin") or request.headers.get("referer")
        if source is None or source == "null":
            site = request.headers.get("sec-fetch-site")
            return source is None and site in (None, "same-origin", "none")
        parts = urlsplit(source)
        host = request.headers.get("host", "")
        return parts.scheme in ("http", "https") and parts.netloc == host

    def csrf_ok(self, session: Session, given: str) -> bool:
        """Whether ``given`` is this session's CSRF token (a fresh session has none yet)."""
        return not session.fresh and hmac.compare_digest(
            given.encode(), self.csrf_token(session).encode()
        )
