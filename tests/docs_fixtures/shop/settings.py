"""The reader's Django settings (``DJANGO_SETTINGS_MODULE=shop.settings``, docs/django.md).

The database is a SQLite file in the current directory, or, when
``SHOP_POSTGRES_DSN`` is set, that PostgreSQL database with the shop's tables
in the schema ``SHOP_POSTGRES_SCHEMA``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

SECRET_KEY = "docs-shop"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["shop.apps.ShopConfig"]
MIDDLEWARE: list[str] = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

_dsn = os.environ.get("SHOP_POSTGRES_DSN")
if _dsn:
    _url = urlsplit(_dsn)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _url.path.lstrip("/"),
            "HOST": _url.hostname or "127.0.0.1",
            "PORT": str(_url.port or 5432),
            "USER": _url.username or "",
            "OPTIONS": {"options": f"-c search_path={os.environ['SHOP_POSTGRES_SCHEMA']}"},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "shop.sqlite3"}}
