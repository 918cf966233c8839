"""The ``shop`` Django app; its path is given, as ``shop`` is a namespace package."""

from __future__ import annotations

from pathlib import Path

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    path = str(Path(__file__).parent)
