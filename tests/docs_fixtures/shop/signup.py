"""The reader's sync web site: ``POST /signup`` sends a welcome (``docs/testing.md``)."""

from __future__ import annotations

from flask import Flask, request
from shop.jobs import Signup, app, welcome

site = Flask(__name__)


@site.post("/signup")
def signup() -> tuple[str, int]:
    app.sync.enqueue(welcome, Signup(request.form["email"]))
    return "", 201
