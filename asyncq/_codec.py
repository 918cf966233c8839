"""The one place that turns objects into bytes and back (msgspec MessagePack).

Backends store what this module produces and never import user schemas;
handlers get back exactly their schema's types. No pickle: decoding can only
ever build the types a schema names.

Payloads are bounded (``MAX_DEPTH``, ``App(max_payload_bytes=...)``): checked
when a producer encodes one, and again when a worker decodes one, since a
store can hold bytes no producer checked. Results are not: they come from the
app's own handlers, and a result that cannot be encoded fails its job.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
import msgspec.inspect

from .exceptions import ConfigurationError, ValidationError

__all__ = ["MAX_DEPTH", "MAX_PAYLOAD_BYTES", "Codec", "decode_any", "encode"]

T = TypeVar("T")

#: The deepest a payload may nest, in containers: a Struct, dataclass, dict,
#: list or tuple is one level, a scalar payload none. Real payloads nest a
#: handful of levels (a tree of Structs takes two a node), so 100 is generous.
#: msgspec encodes and decodes on the Python stack, a frame a level, within the
#: interpreter's recursion limit (1,000 by default) less the caller's frames; a
#: limit this far below it lets any payload that passed ``enqueue`` decode in a
#: worker, however deep the worker's own stack.
MAX_DEPTH = 100

#: The default of ``App(max_payload_bytes=...)``: the largest encoded payload.
#: Every store reads a payload whole on each claim (a batch at a time) and
#: keeps it in one value; bulk data belongs elsewhere, referenced by the payload.
MAX_PAYLOAD_BYTES = 1024 * 1024

#: What a schema or a result type may be, in the errors that refuse one.
SUPPORTED = (
    "use a msgspec Struct, a dataclass, a TypedDict, a NamedTuple, an Enum, builtins "
    "(int, str, list[...], dict[str, ...], datetime, ...) or unions of them, "
    "or a Pydantic model at the top level (pip install 'asyncq[pydantic]')"
)

_encoder = msgspec.msgpack.Encoder()
_any_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder()


def encode(value: object) -> bytes:
    """MessagePack bytes of any value msgspec supports."""
    return _encoder.encode(value)


def decode_any(data: bytes) -> Any:
    """Decode MessagePack bytes into builtins, with no schema (for the CLI and admin views).

    Raises:
        msgspec.DecodeError: not MessagePack, or nested deeper than ``MAX_DEPTH``
            (whatever the interpreter's stack would allow: views render what
            this returns, recursively).
    """
    if len(data) > MAX_DEPTH and _opener_count(data) > MAX_DEPTH and nests_deeper(data, MAX_DEPTH):
        msg = f"nested deeper than {MAX_DEPTH} levels"
        raise msgspec.DecodeError(msg)
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

    __slots__ = ("_decoder", "_jsonable", "_skips", "_unbounded", "job_name", "type")

    def __init__(self, type_: Any, job_name: str) -> None:
        self.type = type_
        self.job_name = job_name
        try:
            self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(type_)
            info = msgspec.inspect.type_info(type_)
            nodes = _type_nodes(info)
        except TypeError as exc:
            msg = (
                f"job {job_name!r}: msgspec cannot encode and decode {type_!r} ({exc}); {SUPPORTED}"
            )
            raise ConfigurationError(msg) from exc
        # ``object`` is left out: msgspec decodes it like ``Any``.
        custom = [n.cls for n in nodes if isinstance(n, msgspec.inspect.CustomType)]
        custom = [cls for cls in custom if cls is not object]
        if custom:
            # msgspec accepts any class here, expecting hooks we never pass:
            # every value would then fail, so refuse the type up front.
            names = ", ".join(sorted({c.__qualname__ for c in custom}))
            msg = (
                f"job {job_name!r}: msgspec cannot encode and decode {type_!r} "
                f"(unsupported type: {names}); {SUPPORTED}"
            )
            raise ConfigurationError(msg)
        # Whether the schema leaves nesting unbounded: ``Any``, ``object``, a
        # recursive type. If it does not, decoding goes no deeper than MAX_DEPTH
        # but to skip unknown fields, where a lack of stack is a RecursionError.
        self._unbounded = _schema_depth(info, {}, set()) is None
        # Raw values are written out verbatim, so their JSON says nothing of their depth.
        self._jsonable = not any(isinstance(n, msgspec.inspect.RawType) for n in nodes)
        # Whether decoding can leave part of the bytes out of the value: the
        # unknown fields of a Struct, dataclass, TypedDict or NamedTuple.
        self._skips = any(isinstance(n, _OBJECT_TYPES) for n in nodes)

    @property
    def json_type(self) -> Any:
        """The type a JSON document is decoded into (``Admin.enqueue_json``)."""
        return self.type

    def encode(
        self, value: T, *, queue: str | None = None, max_bytes: int = MAX_PAYLOAD_BYTES
    ) -> bytes:
        """Encode ``value``, checking it against the type and the limits.

        The value goes through a full decode, so constraints (``msgspec.Meta``,
        required fields) are enforced even when ``value`` is already an
        instance, and a plain ``dict`` is accepted for a Struct schema.

        Args:
            value: the payload.
            queue: named in the errors about limits.
            max_bytes: the largest encoding accepted.

        Raises:
            ValidationError: the value does not match, is larger than
                ``max_bytes`` encoded, nests deeper than ``MAX_DEPTH`` or contains
                itself; nothing was encoded.
        """
        try:
            data = _encoder.encode(value)
            if len(data) > max_bytes:
                raise ValidationError(self.job_name, _too_large(data, max_bytes, queue))
            decoded = self._decoder.decode(data)
        # OverflowError: an int beyond MessagePack's 64 bits.
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError, OverflowError) as exc:
            raise ValidationError(self.job_name, str(exc)) from exc
        except RecursionError:
            # msgspec ran out of stack: far deeper than the limit, or a cycle.
            detail = _too_deep(queue) + ", or it contains itself"
            raise ValidationError(self.job_name, detail) from None
        # A payload shorter than MAX_DEPTH bytes, or holding no more bytes that
        # could open a container, cannot nest deeper: the usual case costs one
        # pass in C. Most others are proven shallow in C too; the rest is scanned.
        if (
            len(data) > MAX_DEPTH
            and _opener_count(data) > MAX_DEPTH
            and not self._shallow(decoded, data)
            and nests_deeper(data, MAX_DEPTH)
        ):
            raise ValidationError(self.job_name, _too_deep(queue))
        return data

    def _shallow(self, decoded: T, data: bytes) -> bool:
        """Whether ``data``, decoded as ``decoded``, is proven to nest within ``MAX_DEPTH``.

        Only when ``decoded`` holds every container of ``data``: when the
        schema has no fields to skip, or ``data`` is exactly the encoding of
        ``decoded``. (Bytes written by hand may repeat a map key, whose first
        value the decoder drops; what the handler gets is measured all the
        same.) Then a schema that bounds nesting bounds ``decoded``, and for
        one that does not, the brackets of its JSON (the same containers)
        measure it.
        """
        if self._skips and _encoder.encode(decoded) != data:
            return False
        if not self._unbounded:
            return True
        return self._jsonable and _json_nests_within(decoded, MAX_DEPTH)

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

    def decode_payload(self, data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> T:
        """Decode stored payload bytes into ``T``, holding them to the limits first.

        The store may hold bytes no producer checked (written by hand, by an
        older version, or damaged), so the worker checks again. Only a schema
        that lets values nest (``Any``, a recursive type) needs the depth
        check: with any other, the decoder descends no deeper than the schema
        but to skip an unknown field, where a lack of stack is a ``RecursionError``.

        Raises:
            msgspec.DecodeError: the bytes are over a limit, are not valid
                MessagePack, or do not match the type.
        """
        if len(data) > max_bytes:
            raise msgspec.DecodeError(_too_large(data, max_bytes, None))
        try:
            value = self._decoder.decode(data)
        except RecursionError:
            raise msgspec.DecodeError(_too_deep(None)) from None
        if (
            self._unbounded
            and len(data) > MAX_DEPTH
            and _opener_count(data) > MAX_DEPTH
            and not self._shallow(value, data)
            and nests_deeper(data, MAX_DEPTH)
        ):
            raise msgspec.DecodeError(_too_deep(None))
        return value


def _type_nodes(root: msgspec.inspect.Type) -> list[msgspec.inspect.Type]:
    """Every node of a type tree, once each."""
    found: list[msgspec.inspect.Type] = []
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
            if isinstance(node, msgspec.inspect.Type):
                found.append(node)
            stack.extend(getattr(node, f) for f in node.__struct_fields__)
    return found


def _schema_depth(
    node: msgspec.inspect.Type, known: dict[int, int | None], path: set[int]
) -> int | None:
    """How deep a value of this type can nest (see ``MAX_DEPTH``); ``None``: without bound.

    ``known`` memoizes shared nodes; ``path`` holds the nodes being measured,
    so meeting one again means the type is recursive.
    """
    key = id(node)
    if key in known:
        return known[key]
    if key in path:
        return None
    ins = msgspec.inspect
    inner: list[msgspec.inspect.Type]
    level = 1
    if isinstance(node, (ins.AnyType, ins.RawType, ins.CustomType)):
        return None  # object decodes like Any; Raw keeps whatever bytes it is given
    if isinstance(node, ins.CollectionType):
        inner = [node.item_type]
    elif isinstance(node, ins.TupleType):
        inner = list(node.item_types)
    elif isinstance(node, (ins.DictType, ins.FrozenDictType)):
        inner = [node.key_type, node.value_type]
    elif isinstance(
        node, (ins.StructType, ins.DataclassType, ins.TypedDictType, ins.NamedTupleType)
    ):
        inner = [field.type for field in node.fields]
    elif isinstance(node, ins.UnionType):
        inner, level = list(node.types), 0
    elif isinstance(node, ins.Metadata):
        inner, level = [node.type], 0
    else:
        return 0  # a scalar: int, str, bytes, datetime, enum, Ext...
    path.add(key)
    depths = [_schema_depth(child, known, path) for child in inner]
    path.discard(key)
    depth = max((d for d in depths if d is not None), default=0) + level
    result = None if None in depths or depth > MAX_DEPTH else depth
    known[key] = result
    return result


def _too_large(data: bytes, max_bytes: int, queue: str | None) -> str:
    where = "" if queue is None else f" of queue {queue!r}"
    return (
        f"{len(data):,} bytes encoded, over the limit{where} of {max_bytes:,} bytes "
        "(App(max_payload_bytes=...))"
    )


def _too_deep(queue: str | None) -> str:
    where = "" if queue is None else f" of queue {queue!r}"
    return f"nested deeper than the limit{where} of {MAX_DEPTH} levels"


_OBJECT_TYPES = (
    msgspec.inspect.StructType,
    msgspec.inspect.DataclassType,
    msgspec.inspect.TypedDictType,
    msgspec.inspect.NamedTupleType,
)
_json_encoder = msgspec.json.Encoder()
# Brackets become parentheses and every other byte goes: what is left is the nesting.
_PARENS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _json_nests_within(value: object, limit: int) -> bool:
    """Whether the JSON of ``value`` shows it nests at most ``limit`` containers deep.

    Each pass deletes the innermost pairs, so the passes that empty the
    brackets count the levels. Brackets inside strings can only keep them
    from emptying or add levels (a balanced run leaves the levels after it
    as they were), so a False may be wrong but a True never is. A value JSON
    cannot hold (an ``Ext``, a tuple as a key) gives False.
    """
    try:
        text = _json_encoder.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError):
        return False
    nesting = text.translate(_PARENS, _NOT_BRACKETS)
    for _ in range(limit):
        if not nesting:
            return True
        nesting = nesting.replace(b"()", b"")
    return not nesting


# -- nesting depth of MessagePack bytes ----------------------------------------------
#
# What each first byte of a MessagePack item is. _SKIP[b] >= 0: a scalar whose
# header and body take 1 + _SKIP[b] bytes. _SKIP[b] == -1: a fixarray or fixmap,
# with _COUNT[b] items (a map's keys and values both count). Otherwise one of
# the headers in _LENGTH (str, bin), _EXT_LENGTH or _CONTAINER (array, map),
# whose length follows in that many bytes, or 0xc1, which MessagePack never uses.

_LENGTH = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}
_EXT_LENGTH = {0xC7: 1, 0xC8: 2, 0xC9: 4}
_CONTAINER = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _item_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    skip = [-2] * 256
    count = [0] * 256
    for b in range(256):
        if b <= 0x7F or b >= 0xE0 or b in (0xC0, 0xC2, 0xC3):  # fixint, nil, bool
            skip[b] = 0
        elif b <= 0x9F:  # fixmap, fixarray
            skip[b] = -1
            count[b] = (b & 0x0F) * (2 if b <= 0x8F else 1)
        elif b <= 0xBF:  # fixstr
            skip[b] = b & 0x1F
        elif b in (0xCA, 0xCB):  # float 32, 64
            skip[b] = 4 if b == 0xCA else 8
        elif 0xCC <= b <= 0xD3:  # uint, int 8 to 64
            skip[b] = 1 << ((b - 0xCC) & 3)
        elif 0xD4 <= b <= 0xD8:  # fixext 1 to 16, after a type byte
            skip[b] = 1 + (1 << (b - 0xD4))
    return tuple(skip), tuple(count)


_SKIP, _COUNT = _item_tables()
# Every byte but those that can open a container (fixmap, fixarray, array and
# map 16 and 32): deleting them leaves a count that bounds the depth.
_NOT_OPENERS = bytes(b for b in range(256) if not (0x80 <= b <= 0x9F or 0xDC <= b <= 0xDF))


def _opener_count(data: bytes) -> int:
    """How many bytes of ``data`` could open a container (an upper bound on its depth)."""
    return len(data.translate(None, _NOT_OPENERS))


def nests_deeper(data: bytes, limit: int) -> bool:
    """Whether MessagePack ``data`` nests containers more than ``limit`` deep.

    Reads the headers only, skipping strings and binaries by their length, and
    stops at the first container past the limit. Bytes that are not valid
    MessagePack give False: the decoder that follows reports them.
    """
    skip = _SKIP
    stack: list[int] = []  # items left to read in each enclosing container
    left = 1  # items left at the current level: the top holds one
    pos = 0
    end = len(data)
    while pos < end:
        b = data[pos]
        pos += 1
        n = skip[b]
        if n >= 0:
            pos += n
        else:
            if n == -1:
                items = _COUNT[b]
            elif b in _LENGTH:
                width = _LENGTH[b]
                pos += width + int.from_bytes(data[pos : pos + width], "big")
                items = -1
            elif b in _EXT_LENGTH:
                width = _EXT_LENGTH[b]
                pos += width + 1 + int.from_bytes(data[pos : pos + width], "big")
                items = -1
            elif b in _CONTAINER:
                width, per_entry = _CONTAINER[b]
                items = per_entry * int.from_bytes(data[pos : pos + width], "big")
                pos += width
            else:
                return False
            if items >= 0:  # a container, one level below the current one
                if len(stack) >= limit:
                    return True
                if items:
                    stack.append(left - 1)
                    left = items
                    continue
        left -= 1
        while not left:
            if not stack:
                return False
            left = stack.pop()
    return False
