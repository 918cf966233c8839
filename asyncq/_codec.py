"""The one place that turns objects into bytes and back (msgspec MessagePack).

Backends store what this module produces and never import user schemas;
handlers get back exactly their schema's types. No pickle: decoding can only
ever build the types a schema names.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
import msgspec.inspect

from .exceptions import ConfigurationError, ValidationError

__all__ = ["Codec", "encode", "decode_any"]

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def encode(value: object) -> bytes:
    """MessagePack bytes of any value msgspec supports."""
    return _encoder.encode(value)


def decode_any(data: bytes) -> Any:
    """Decode MessagePack bytes into builtins, with no schema (for the CLI and admin views)."""
    return _any_decoder.decode(data)


class Codec(Generic[T]):
    """Encodes and validates values of one type ``T``; decodes bytes back into ``T``.

    Args:
        type_: anything msgspec can convert to: a Struct, dataclass, TypedDict,
            builtin or ``Any``.
        job_name: named in validation errors.

    Raises:
        ConfigurationError: msgspec cannot encode and decode ``type_`` (an
            untagged union of Structs, a plain class, ...).
    """

    __slots__ = ("_decoder", "job_name", "type")

    def __init__(self, type_: Any, job_name: str) -> None:
        self.type = type_
        self.job_name = job_name
        try:
            self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(type_)
            custom = _custom_types(msgspec.inspect.type_info(type_))
        except TypeError as exc:
            msg = f"job {job_name!r}: msgspec cannot encode and decode {type_!r} ({exc})"
            raise ConfigurationError(msg) from exc
        if custom:
            # msgspec accepts any class here, expecting hooks we never pass:
            # every value would then fail, so refuse the type up front.
            names = ", ".join(sorted({c.__qualname__ for c in custom}))
            msg = (
                f"job {job_name!r}: msgspec cannot encode and decode {type_!r} "
                f"(unsupported type: {names}); use a msgspec Struct, a dataclass, "
                "a TypedDict or builtins"
            )
            raise ConfigurationError(msg)

    def encode(self, value: T) -> bytes:
        """Encode ``value``, checking it against the type.

        The value goes through a full decode, so constraints (``msgspec.Meta``,
        required fields) are enforced even when ``value`` is already an
        instance, and a plain ``dict`` is accepted for a Struct schema.

        Raises:
            ValidationError: the value does not match; nothing was encoded.
        """
        try:
            data = _encoder.encode(value)
            self._decoder.decode(data)
        # OverflowError: an int beyond MessagePack's 64 bits.
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError, OverflowError) as exc:
            raise ValidationError(self.job_name, str(exc)) from exc
        return data

    def encode_result(self, value: T) -> bytes:
        """Encode a handler's return value, without the validating round trip of ``encode``.

        The type checker already holds the handler to its return annotation, and
        a mismatch shows when the producer decodes; the worker's hot path should
        not pay for a second decode of every result.

        Raises:
            msgspec.EncodeError, TypeError: the value cannot be encoded at all.
        """
        return _encoder.encode(value)

    def decode(self, data: bytes) -> T:
        """Decode bytes into ``T``.

        Raises:
            msgspec.DecodeError: the bytes are not valid MessagePack, or do not match the type.
        """
        return self._decoder.decode(data)


def _custom_types(root: msgspec.inspect.Type) -> list[type]:
    """The classes in a type tree that msgspec would only handle through hooks.

    ``object`` is left out: msgspec decodes it like ``Any``.
    """
    found: list[type] = []
    seen: set[int] = set()
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif isinstance(node, (msgspec.inspect.Type, msgspec.inspect.Field)):
            if id(node) in seen:  # recursive Structs point back at themselves
                continue
            seen.add(id(node))
            if isinstance(node, msgspec.inspect.CustomType) and node.cls is not object:
                found.append(node.cls)
            stack.extend(getattr(node, f) for f in node.__struct_fields__)
    return found
