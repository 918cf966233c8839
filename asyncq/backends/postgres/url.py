"""The PostgreSQL backend's URL: asyncq's options in it, and the checks asyncpg would fail late.

A ``postgresql://`` URL carries two kinds of query options: asyncq's own
(``OPTIONS``: the schema, ``migrate``, retention, the pool and the waits),
which ``read_url`` takes out, and the driver's (``sslmode``,
``sslrootcert``, any server setting), which stay in the DSN for asyncpg.
``check_dsn`` refuses up front what asyncpg would only refuse on connecting
(a port that is not a number, an ``sslmode`` it does not know), and then as a
bare ``ValueError`` or a store's failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ...exceptions import ConfigurationError
from .._common import (
    RETENTION_OPTIONS,
    flag,
    integer,
    mask_url,
    parse_url_options,
    pop_retention,
    seconds,
    text,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .._common import Converter

__all__ = ["OPTIONS", "SCHEMES", "SSL_MODES", "check_dsn", "read_url"]

#: The schemes of a PostgreSQL URL.
SCHEMES = frozenset({"postgresql", "postgres"})

#: asyncq's own options in a URL's query; every other name is the driver's.
OPTIONS: Mapping[str, Converter] = {
    "schema": text,
    "migrate": flag,
    **RETENTION_OPTIONS,
    "min_size": integer,
    "max_size": integer,
    "poll_interval": seconds,
    "carry_jobs": flag,
    "events": flag,
}

#: The ``sslmode`` values asyncpg knows (libpq's, exactly as spelled).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def read_url(url: str, options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The DSN for asyncpg and the backend's keyword arguments, from ``url`` and ``options``.

    Keyword ``options`` win over the URL's (a ``schema`` or ``migrate`` of
    ``None`` counts as not given); the retention settings of both become one
    ``retention``.

    Raises:
        ConfigurationError: not a PostgreSQL URL, or a malformed asyncq option.
    """
    if _scheme(url) not in SCHEMES:
        msg = f"not a PostgreSQL URL: {mask_url(url)!r} (use postgresql://...)"
        raise ConfigurationError(msg)
    settings, dsn = parse_url_options(url, OPTIONS, driver=None)
    settings.update(
        (name, value)
        for name, value in options.items()
        if value is not None or name not in ("schema", "migrate")
    )
    settings["retention"] = pop_retention(settings)
    return dsn, settings


def _scheme(url: str) -> str:
    """The scheme of ``url``, lower-cased (``""``: none). Never raises, as ``urlsplit`` may."""
    scheme, colon, _ = url.partition(":")
    return scheme.lower() if colon else ""


def check_dsn(dsn: str) -> None:
    """Refuse a DSN whose ports or ``sslmode`` asyncpg cannot use.

    asyncpg reads the DSN only when it connects, and meets a port that is not
    a number with a bare ``ValueError``; this says what is wrong first.

    Raises:
        ConfigurationError: the URL cannot be parsed, a port is not a number
            from 1 to 65535, or ``sslmode`` is not one of ``SSL_MODES``. The
            URL in the message is masked.
    """
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:
        msg = f"malformed PostgreSQL URL {mask_url(dsn)!r}: {exc}"
        raise ConfigurationError(msg) from None
    # The host list comes after the user info's last "@" (asyncpg's first "@"
    # differs only for a password with an unescaped "@", which is malformed).
    hosts = parts.netloc.rpartition("@")[2]
    ports = [_port_of(host) for host in hosts.split(",") if host]
    query = parse_qsl(parts.query, keep_blank_values=False)
    for name, value in query:
        if name == "port":
            ports.extend(value.split(","))
        elif name == "sslmode" and value not in SSL_MODES:
            msg = (
                f"sslmode {value!r} in the PostgreSQL URL {mask_url(dsn)!r} is not one of "
                f"{', '.join(SSL_MODES)}"
            )
            raise ConfigurationError(msg)
    for port in ports:
        if port and not _is_port(unquote(port)):
            msg = f"port {port!r} in the PostgreSQL URL {mask_url(dsn)!r} is not a number 1-65535"
            raise ConfigurationError(msg)


def _port_of(host: str) -> str:
    """The port of one ``host[:port]`` or ``[ipv6][:port]`` of a host list (``""``: none)."""
    if host.startswith("["):
        return host.partition("]")[2].removeprefix(":")
    return host.partition(":")[2]


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65_535
