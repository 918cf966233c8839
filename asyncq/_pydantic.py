"""Pydantic models as payloads and results (``pip install 'asyncq[pydantic]'``).

A model is validated by Pydantic and stored as MessagePack like every other
payload: ``model.model_dump(mode="json")`` is encoded by msgspec, and decoded
back through ``Model.model_validate``. So the stored bytes are plain data (no
pickle, no class names), the CLI and admin views show them as any payload,
and a model's validators run on both sides: when a producer enqueues and
when a worker decodes.

Pydantic is imported only when an app declares a model (``codec_for`` looks
for it in ``sys.modules``: a schema cannot be a model unless it is imported).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from ._codec import MAX_DEPTH, MAX_PAYLOAD_BYTES, Codec, nests_deeper
from .exceptions import ValidationError

if TYPE_CHECKING:
    import pydantic

__all__ = ["PydanticCodec", "codec_for", "is_model"]

T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def is_model(type_: object) -> bool:
    """Whether ``type_`` is a Pydantic model class (without importing Pydantic)."""
    module = sys.modules.get("pydantic")
    if module is None or not isinstance(type_, type):
        return False
    return issubclass(type_, module.BaseModel)


def codec_for(type_: Any, job_name: str) -> Codec[Any]:
    """The codec of a schema or a result type: Pydantic's for a model, else msgspec's."""
    if is_model(type_):
        return PydanticCodec(type_, job_name)
    return Codec(type_, job_name)


class PydanticCodec(Codec[T]):
    """``Codec`` for a Pydantic model: the same methods, validated by the model."""

    __slots__ = ()

    def __init__(self, type_: type[pydantic.BaseModel], job_name: str) -> None:
        self.type = type_
        self.job_name = job_name

    @property
    def json_type(self) -> Any:
        """A JSON document is decoded into builtins, then validated by the model."""
        return Any

    def _validate(self, value: object) -> T:
        model: T = self.type.model_validate(value)
        return model

    def encode(
        self, value: T, *, queue: str | None = None, max_bytes: int = MAX_PAYLOAD_BYTES
    ) -> bytes:
        """Validate ``value`` (a model or its fields as a dict) and encode it.

        Raises:
            ValidationError: the model refused it, or it is over a limit; nothing encoded.
        """
        import pydantic

        try:
            model = self._validate(value.model_dump() if isinstance(value, self.type) else value)
            data = _encoder.encode(model.model_dump(mode="json"))  # type: ignore[attr-defined]
        except pydantic.ValidationError as exc:
            raise ValidationError(self.job_name, _describe(exc)) from exc
        except (msgspec.EncodeError, TypeError, ValueError) as exc:
            raise ValidationError(self.job_name, str(exc)) from exc
        where = "" if queue is None else f" of queue {queue!r}"
        if len(data) > max_bytes:
            detail = (
                f"{len(data):,} bytes encoded, over the limit{where} of {max_bytes:,} bytes "
                "(App(max_payload_bytes=...))"
            )
            raise ValidationError(self.job_name, detail)
        if len(data) > MAX_DEPTH and nests_deeper(data, MAX_DEPTH):
            detail = f"nested deeper than the limit{where} of {MAX_DEPTH} levels"
            raise ValidationError(self.job_name, detail)
        return data

    def encode_result(self, value: T) -> bytes:
        """Encode a handler's model result (its JSON-mode dump, as MessagePack).

        Raises:
            TypeError: the value is not a model of the result type.
        """
        if not isinstance(value, self.type):
            msg = f"job {self.job_name!r} returned {type(value).__name__}, not {self.type.__name__}"
            raise TypeError(msg)
        return _encoder.encode(value.model_dump(mode="json"))

    def decode(self, data: bytes) -> T:
        """Decode and validate stored bytes into the model.

        Raises:
            msgspec.DecodeError: the bytes are not MessagePack, or the model refused them.
        """
        import pydantic

        raw = _decoder.decode(data)
        try:
            return self._validate(raw)
        except pydantic.ValidationError as exc:
            msg = f"the stored value does not match {self.type.__name__}: {_describe(exc)}"
            raise msgspec.DecodeError(msg) from exc

    def decode_payload(self, data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> T:
        """``decode``, holding the bytes to the limits first (see ``Codec.decode_payload``).

        Raises:
            msgspec.DecodeError: over a limit, not MessagePack, or refused by the model.
        """
        if len(data) > max_bytes:
            msg = f"{len(data):,} bytes encoded, over the limit of {max_bytes:,} bytes"
            raise msgspec.DecodeError(msg)
        if len(data) > MAX_DEPTH and nests_deeper(data, MAX_DEPTH):
            raise msgspec.DecodeError(f"nested deeper than the limit of {MAX_DEPTH} levels")
        return self.decode(data)


def _describe(exc: pydantic.ValidationError) -> str:
    """Pydantic's errors on one line: ``field.path: message; ...``."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(payload)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
