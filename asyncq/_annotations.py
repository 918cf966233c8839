"""What a job carries besides its payload: metadata, progress detail and logged lines.

The limits live here, with the checks every entry point shares and the
encodings every store uses: metadata and progress detail are JSON (so
PostgreSQL can filter ``meta`` as ``jsonb`` and every store compares the
same text), a logged line is the JSON array of a ``LogLine``, and a job's
lines are kept as such arrays one per text line (JSON never holds a raw
newline), so a store can append and trim them without decoding any.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from ._records import LogLine

__all__ = [
    "LOG_LEVELS",
    "MAX_DETAIL_BYTES",
    "MAX_LOG_LINES",
    "MAX_LOG_MESSAGE",
    "MAX_META_BYTES",
    "MAX_META_KEYS",
    "check_meta",
    "decode_json",
    "decode_lines",
    "encode_detail",
    "encode_line",
    "encode_meta",
    "keep_lines",
    "log_line",
    "meta_matches",
    "meta_text",
]

#: The most lines a job keeps from ``ctx.log``; older ones are dropped first (and counted).
MAX_LOG_LINES = 100
#: The longest logged message, in characters; a longer one is cut and ends with "…".
MAX_LOG_MESSAGE = 2_000
#: The largest progress detail, in bytes of its JSON encoding.
MAX_DETAIL_BYTES = 4_096
#: The most keys a job's metadata may have.
MAX_META_KEYS = 32
#: The largest metadata, in bytes of its JSON encoding.
MAX_META_BYTES = 4_096
#: The levels ``ctx.log`` takes, mapped to the standard library's.
LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

_encode = msgspec.json.Encoder().encode
_decode_line = msgspec.json.Decoder(LogLine).decode
decode_json = msgspec.json.decode


def log_line(at: float, attempt: int, level: str, message: str) -> LogLine:
    """A line for ``ctx.log``, its message cut to ``MAX_LOG_MESSAGE`` characters.

    Raises:
        ValueError: ``level`` is not one of ``LOG_LEVELS``.
    """
    if level not in LOG_LEVELS:
        msg = f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}"
        raise ValueError(msg)
    if len(message) > MAX_LOG_MESSAGE:
        message = message[: MAX_LOG_MESSAGE - 1] + "…"
    return LogLine(at=at, attempt=attempt, level=level, message=message)


def encode_line(line: LogLine) -> bytes:
    """One line as stored: a JSON array, without a newline."""
    return _encode(line)


def decode_lines(text: bytes | str | None) -> tuple[LogLine, ...]:
    """The lines stored as ``encode_line`` texts, one per text line."""
    if not text:
        return ()
    if isinstance(text, str):
        text = text.encode()
    return tuple(_decode_line(part) for part in text.split(b"\n") if part)


def keep_lines(
    old: Sequence[LogLine], new: Iterable[LogLine], dropped: int
) -> tuple[tuple[LogLine, ...], int]:
    """``old`` then ``new``, the oldest beyond ``MAX_LOG_LINES`` dropped; and the dropped count."""
    lines = (*old, *new)
    over = len(lines) - MAX_LOG_LINES
    if over > 0:
        return lines[over:], dropped + over
    return lines, dropped


def _json(value: object, subject: str, limit: int) -> bytes:
    try:
        data = _encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        msg = f"{subject} must be JSON-able: {exc}"
        raise ValueError(msg) from None
    if len(data) > limit:
        msg = f"{subject} is {len(data):,} bytes as JSON; the limit is {limit:,}"
        raise ValueError(msg)
    return data


def encode_detail(detail: object, subject: str) -> bytes:
    """A progress detail as stored (JSON); ``subject`` names it in errors.

    Raises:
        ValueError: ``detail`` is not JSON-able, or over ``MAX_DETAIL_BYTES``.
    """
    return _json(detail, subject, MAX_DETAIL_BYTES)


def check_meta(meta: object, subject: str = "meta") -> dict[str, Any]:
    """``meta`` as a job keeps it, checked; ``subject`` names it in errors.

    Raises:
        ValueError: not a mapping with ``str`` keys, more than
            ``MAX_META_KEYS`` keys, a value that is not JSON-able, or over
            ``MAX_META_BYTES`` encoded.
    """
    if not isinstance(meta, Mapping):
        msg = f"{subject} must be a mapping of str to JSON values, got {type(meta).__name__}"
        raise ValueError(msg)
    checked = dict(meta)
    bad = next((k for k in checked if type(k) is not str), None)
    if bad is not None:
        msg = f"{subject} must have str keys, got {bad!r}"
        raise ValueError(msg)
    if len(checked) > MAX_META_KEYS:
        msg = f"{subject} has {len(checked)} keys; the limit is {MAX_META_KEYS}"
        raise ValueError(msg)
    _json(checked, subject, MAX_META_BYTES)
    return checked


def encode_meta(meta: Mapping[str, Any]) -> bytes:
    """Metadata as stored (JSON)."""
    return _encode(meta)


def meta_text(value: object) -> str:
    """How a metadata value is matched and shown as text: a string as it is, else its JSON."""
    return value if isinstance(value, str) else _encode(value).decode()


def meta_matches(meta: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    """Whether ``meta`` has every key of ``wanted`` with that value (``meta_text``)."""
    for key, value in wanted.items():
        if key not in meta or meta_text(meta[key]) != value:
            return False
    return True
