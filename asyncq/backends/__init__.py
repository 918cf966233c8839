"""Storage backends, and ``from_url`` to pick one by URL.

Each backend module imports its driver only when it is used, so the extras
(``asyncq[redis]``, ``asyncq[postgres]``) stay optional. The protocol they
implement, its optional capabilities and ``Retention`` are in ``base``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..exceptions import ConfigurationError
from ._common import mask_url
from .base import Backend, Capability, Retention

__all__ = ["DEFAULT_URL", "Backend", "Capability", "Retention", "from_url"]

#: The backend used when neither ``backend=`` nor ``ASYNCQ_BACKEND`` is given.
DEFAULT_URL = "sqlite:///asyncq.db"

# scheme -> (module, class, the extra that brings its driver)
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("asyncq.backends.memory", "MemoryBackend", None),
    "sqlite": ("asyncq.backends.sqlite", "SQLiteBackend", None),
    "redis": ("asyncq.backends.redis", "RedisBackend", "redis"),
    "rediss": ("asyncq.backends.redis", "RedisBackend", "redis"),
    "unix": ("asyncq.backends.redis", "RedisBackend", "redis"),
    "valkey": ("asyncq.backends.redis", "RedisBackend", "redis"),
    "valkeys": ("asyncq.backends.redis", "RedisBackend", "redis"),
    "postgresql": ("asyncq.backends.postgres", "PostgresBackend", "postgres"),
    "postgres": ("asyncq.backends.postgres", "PostgresBackend", "postgres"),
}


def from_url(url: str | None = None, **options: Any) -> Backend:
    """Make a backend from a URL (``ASYNCQ_BACKEND`` when ``None``, else ``DEFAULT_URL``).

    Known schemes: ``memory://``, ``sqlite:///path.db``, ``redis://``, ``rediss://``,
    ``unix://``, ``postgresql://``. Extra keyword arguments go to the backend's
    ``from_url`` (for example ``namespace=``, or the ``Retention`` options).

    Raises:
        ConfigurationError: unknown scheme, or the backend's extra is not installed.
    """
    url = url or os.environ.get("ASYNCQ_BACKEND") or DEFAULT_URL
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        msg = f"unknown backend URL {mask_url(url)!r}: the scheme must be one of {known}"
        raise ConfigurationError(msg)
    module_name, class_name, extra = _SCHEMES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        msg = f"the {scheme}:// backend needs its driver: pip install 'asyncq[{extra}]' ({exc})"
        raise ConfigurationError(msg) from exc
    backend: Backend = getattr(module, class_name).from_url(url, **options)
    return backend
