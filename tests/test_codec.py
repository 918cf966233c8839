"""Codec: validation at encode time, round trips, and schemas msgspec cannot use."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypedDict

import msgspec
import pytest

from asyncq import ConfigurationError, ValidationError
from asyncq._codec import (
    MAX_DEPTH,
    MAX_PAYLOAD_BYTES,
    Codec,
    _json_nests_within,
    decode_any,
    encode,
    nests_deeper,
)


class Size(msgspec.Struct):
    width: Annotated[int, msgspec.Meta(gt=0, le=10_000)]
    height: Annotated[int, msgspec.Meta(gt=0, le=10_000)]


class Resize(msgspec.Struct):
    url: Annotated[str, msgspec.Meta(min_length=1)]
    size: Size
    tags: list[str] = []
    fmt: Literal["png", "jpeg"] = "png"


class Node(msgspec.Struct):
    value: int
    children: list[Node] = []


@dataclasses.dataclass
class Charge:
    order_id: str
    cents: int
    at: dt.datetime | None = None


class Event(TypedDict):
    kind: str
    count: int


class Plain:
    """A class msgspec has no native support for."""


class A(msgspec.Struct):
    a: int


class B(msgspec.Struct):
    b: int


GOOD = Resize("https://x/1.png", Size(640, 480), tags=["thumb"])


def codec(type_: Any) -> Codec[Any]:
    return Codec(type_, "images.resize")


# -- validation at encode ----------------------------------------------------------


def test_valid_struct_round_trips() -> None:
    c: Codec[Resize] = codec(Resize)
    assert c.decode(c.encode(GOOD)) == GOOD


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (Resize("u", Size(0, 480)), "Expected `int` >= 1 - at `$.size.width`"),
        (Resize("u", Size(640, 10_001)), "Expected `int` <= 10000 - at `$.size.height`"),
        (Resize("", Size(1, 1)), "Expected `str` of length >= 1 - at `$.url`"),
        (Resize("u", Size("640", 1)), "Expected `int`, got `str` - at `$.size.width`"),  # type: ignore[arg-type]
        (Resize("u", Size(1, 1), tags=[1]), "Expected `str`, got `int` - at `$.tags[0]`"),  # type: ignore[list-item]
        (Resize("u", Size(1, 1), fmt="gif"), "Invalid enum value 'gif' - at `$.fmt`"),  # type: ignore[arg-type]
    ],
)
def test_struct_instances_are_checked_against_their_constraints(value: Resize, detail: str) -> None:
    # msgspec does not validate on __init__, so the instance itself is not proof.
    with pytest.raises(ValidationError) as info:
        codec(Resize).encode(value)
    assert info.value.job_name == "images.resize"
    assert info.value.detail == detail
    assert str(info.value) == f"invalid payload for job 'images.resize': {detail}"
    assert isinstance(info.value.__cause__, msgspec.ValidationError)


def test_missing_field_is_named_with_its_path() -> None:
    with pytest.raises(ValidationError) as info:
        codec(Resize).encode({"url": "u", "size": {"width": 3}})
    assert info.value.detail == "Object missing required field `height` - at `$.size`"


def test_a_dict_is_accepted_for_a_struct_schema() -> None:
    c: Codec[Resize] = codec(Resize)
    data = c.encode({"url": "u", "size": {"width": 3, "height": 4}})  # type: ignore[arg-type]
    assert c.decode(data) == Resize("u", Size(3, 4))


def test_a_wrong_type_at_the_top_level_is_invalid() -> None:
    with pytest.raises(ValidationError, match=r"Expected `object`, got `array`"):
        codec(Resize).encode([1, 2])


def test_dataclass_schema() -> None:
    c: Codec[Charge] = codec(Charge)
    at = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    assert c.decode(c.encode(Charge("o-1", 500, at))) == Charge("o-1", 500, at)
    with pytest.raises(ValidationError, match=r"Expected `int`, got `float` - at `\$.cents`"):
        c.encode(Charge("o-1", 5.5))  # type: ignore[arg-type]


def test_typed_dict_schema() -> None:
    c: Codec[Event] = codec(Event)
    assert c.decode(c.encode({"kind": "click", "count": 2})) == {"kind": "click", "count": 2}
    with pytest.raises(ValidationError, match="missing required field `count`"):
        c.encode({"kind": "click"})  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("type_", "good", "bad", "detail"),
    [
        (list[int], [1, 2, 3], [1, "2"], "Expected `int`, got `str` - at `$[1]`"),
        (
            dict[str, float],
            {"a": 1.5, "b": 2},
            {"a": "x"},
            "Expected `float`, got `str` - at `$[...]`",
        ),
        (int, 7, True, "Expected `int`, got `bool`"),
        (str | None, None, 3, "Expected `str | null`, got `int`"),
        (tuple[int, str], (1, "a"), (1, 2), "Expected `str`, got `int` - at `$[1]`"),
        (uuid.UUID, uuid.UUID(int=1), "not-a-uuid", "Invalid UUID"),
    ],
    ids=["list", "dict", "int-not-bool", "optional", "tuple", "uuid"],
)
def test_builtin_schemas(type_: Any, good: object, bad: object, detail: str) -> None:
    c = codec(type_)
    assert c.decode(c.encode(good)) == good
    with pytest.raises(ValidationError) as info:
        c.encode(bad)
    assert info.value.detail == detail


def test_int_beyond_64_bits_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="can't serialize ints"):
        codec(list[int]).encode([2**70])


def test_unencodable_value_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="Encoding objects of type Plain is unsupported"):
        codec(Any).encode({"x": Plain()})


def test_any_schema_accepts_any_msgspec_value() -> None:
    c = codec(Any)
    value = {"a": [1, 2.5, None, "s", b"raw"], "b": {"c": True}}
    assert c.decode(c.encode(value)) == value


def test_recursive_struct_schema() -> None:
    tree = Node(1, [Node(2), Node(3, [Node(4)])])
    c: Codec[Node] = codec(Node)
    assert c.decode(c.encode(tree)) == tree
    with pytest.raises(ValidationError, match=r"at `\$.children\[1\].children\[0\].value`"):
        c.encode(Node(1, [Node(2), Node(3, [Node("x")])]))  # type: ignore[arg-type]


def test_post_init_errors_are_validation_errors() -> None:
    @dataclasses.dataclass
    class Positive:
        n: int

        def __post_init__(self) -> None:
            if self.n <= 0:
                raise ValueError("n must be positive")

    with pytest.raises(ValidationError, match="n must be positive"):
        codec(Positive).encode({"n": -1})


def test_validation_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"images\.resize"):
        codec(int).encode("x")


# -- decode ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"", b"\x92\x01", b"\x82\xa3url"],
    ids=["never-used-opcode", "empty", "truncated-array", "truncated-map"],
)
def test_undecodable_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        codec(Resize).decode(data)


def test_bytes_of_another_shape_raise_a_decode_error_naming_the_field() -> None:
    old = encode({"url": "u", "size": {"width": "wide", "height": 1}})
    with pytest.raises(msgspec.ValidationError, match=r"at `\$.size.width`"):
        codec(Resize).decode(old)


def test_module_level_helpers_round_trip_builtins() -> None:
    value = {"id": "j1", "n": [1, 2], "ok": None}
    assert decode_any(encode(value)) == value
    assert decode_any(encode(GOOD)) == {
        "url": "https://x/1.png",
        "size": {"width": 640, "height": 480},
        "tags": ["thumb"],
        "fmt": "png",
    }


def test_encode_matches_the_shared_encoder() -> None:
    assert codec(Resize).encode(GOOD) == encode(GOOD) == msgspec.msgpack.encode(GOOD)


# -- schemas msgspec cannot use ------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "reason"),
    [
        (A | B, "must be tagged"),
        (list[int] | tuple[int, ...], "more than one array-like"),
        (Plain, "unsupported type: Plain"),
        (list[Plain], "unsupported type: Plain"),
        (dict[str, Plain], "unsupported type: Plain"),
        (Callable[[], int], "unsupported type: Callable"),
    ],
    ids=["untagged-union", "two-arrays", "plain-class", "nested", "dict-value", "callable"],
)
def test_types_msgspec_cannot_handle_are_configuration_errors(type_: Any, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as info:
        codec(type_)
    assert "job 'images.resize'" in str(info.value)


def test_a_dataclass_with_an_unsupported_field_is_a_configuration_error() -> None:
    @dataclasses.dataclass
    class Holder:
        thing: Plain

    with pytest.raises(ConfigurationError, match="unsupported type: Plain"):
        codec(Holder)


def test_object_is_treated_as_any() -> None:
    c = codec(object)
    assert c.decode(c.encode([1, "a"])) == [1, "a"]


# -- limits: size and nesting ------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def depth_of(value: Any) -> int:
    """How many containers deep a builtin value nests (the reference for the byte scan)."""
    if isinstance(value, dict):
        return 1 + max((max(depth_of(k), depth_of(v)) for k, v in value.items()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# Every kind of MessagePack header: fix and sized strings, binaries, exts,
# 16- and 32-bit arrays and maps, ints and floats of each width.
SHAPES: list[Any] = [
    1,
    [],
    {},
    [[]],
    {"a": {"b": [1, [2, [3]]]}},
    ["s" * 31, "s" * 32, "s" * 300, "s" * 70_000, [None, True, False]],
    [b"", b"b" * 300, b"b" * 70_000, [1.5, 2**7, 2**15, 2**31, 2**63, -(2**5), -(2**31)]],
    [msgspec.msgpack.Ext(1, b"x" * n) for n in (1, 2, 4, 8, 16, 3, 300, 70_000)] + [[[]]],
    [*range(20), list(range(70_000)), [[]]],
    {str(i): [i] for i in range(20)} | {"deep": nested(5)},
    {i: {"x": nested(3)} for i in range(70_000)},
    {(1, 2): [[{}]]},
    nested(99),
    nested(100),
    nested(101),
    [nested(3), nested(101), nested(2)],
]


@pytest.mark.parametrize("value", SHAPES, ids=range(len(SHAPES)))
@pytest.mark.parametrize("limit", [1, 2, 5, 100])
def test_the_nesting_scan_agrees_with_the_values_depth(value: Any, limit: int) -> None:
    assert nests_deeper(encode(value), limit) is (depth_of(value) > limit)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", b"\xdc\x00"], ids=str)
def test_the_nesting_scan_leaves_invalid_bytes_to_the_decoder(data: bytes) -> None:
    assert nests_deeper(data, 1) is False


@pytest.mark.parametrize(
    ("type_", "bounded"),
    [
        (Resize, True),
        (Charge, True),
        (Event, True),
        (list[int], True),
        (int | None, True),
        (Node, False),
        (Any, False),
        (object, False),
        (dict[str, Any], False),
        (msgspec.Raw, False),
    ],
)
def test_only_schemas_that_let_values_nest_are_unbounded(type_: Any, bounded: bool) -> None:
    assert codec(type_)._unbounded is not bounded


@pytest.mark.parametrize(
    ("type_", "wrap"),
    [(Any, lambda v: {"x": v}), (dict[str, Any], lambda v: {"x": v}), (list[Any], lambda v: [v])],
    ids=["any", "dict", "list"],
)
def test_a_payload_nested_past_the_limit_is_a_validation_error(
    type_: Any, wrap: Callable[[Any], Any]
) -> None:
    c = codec(type_)
    inside = wrap(nested(MAX_DEPTH - 1))  # exactly MAX_DEPTH levels
    assert c.decode(c.encode(inside)) == inside
    with pytest.raises(ValidationError, match=f"deeper than the limit of queue 'q' of {MAX_DEPTH}"):
        c.encode(wrap(nested(MAX_DEPTH)), queue="q")


@pytest.mark.parametrize("depth", [980, 5_000, 100_000])
def test_a_payload_nested_beyond_the_stack_is_a_validation_error(depth: int) -> None:
    with pytest.raises(ValidationError, match=f"images.resize.*limit of {MAX_DEPTH} levels"):
        codec(Any).encode(nested(depth))


def test_a_payload_containing_itself_is_a_validation_error() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    ring: list[Any] = [1]
    ring.append(ring)
    for value in (loop, ring, {"a": [ring]}):
        with pytest.raises(ValidationError, match="or it contains itself"):
            codec(Any).encode(value)
    with pytest.raises(ValidationError, match="or it contains itself"):
        codec(Resize).encode({"url": "u", "size": loop})  # type: ignore[arg-type]


def test_an_unknown_field_nested_past_the_limit_is_refused_for_a_bounded_schema() -> None:
    # The schema bounds what the handler gets, but the bytes stored keep the field.
    c = codec(Size)
    with pytest.raises(ValidationError, match="deeper than the limit"):
        c.encode({"width": 1, "height": 2, "extra": nested(MAX_DEPTH + 5)})  # type: ignore[arg-type]
    assert c.encode({"width": 1, "height": 2, "extra": nested(50)})  # type: ignore[arg-type]


def test_wide_payloads_are_not_mistaken_for_deep_ones() -> None:
    many = [Resize(f"https://x/{i}", Size(i + 1, 2), tags=["a", "é"]) for i in range(500)]
    c: Codec[list[Resize]] = codec(list[Resize])
    assert c.decode(c.encode(many)) == many
    loose = [{"i": i, "tags": [[i], {"é": "ü" * 40}]} for i in range(500)]
    assert decode_any(codec(Any).encode(loose)) == loose


def test_a_payload_over_the_size_limit_is_a_validation_error() -> None:
    c = codec(Any)
    assert c.encode("x" * 995, max_bytes=1_000)  # 998 bytes with its header
    with pytest.raises(ValidationError, match=r"1,003 bytes encoded, over the limit of queue"):
        c.encode("x" * 1_000, queue="images", max_bytes=1_000)
    with pytest.raises(ValidationError, match=f"over the limit of {MAX_PAYLOAD_BYTES:,} bytes"):
        c.encode(b"x" * MAX_PAYLOAD_BYTES)


def test_decoding_a_payload_holds_it_to_the_limits() -> None:
    loose = codec(Any)
    assert loose.decode_payload(encode(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(msgspec.DecodeError, match=f"limit of {MAX_DEPTH} levels"):
        loose.decode_payload(encode(nested(MAX_DEPTH + 1)))
    with pytest.raises(msgspec.DecodeError, match="over the limit of 10 bytes"):
        loose.decode_payload(encode("x" * 20), max_bytes=10)
    with pytest.raises(msgspec.DecodeError, match="limit of"):
        loose.decode_payload(b"\x91" * 100_000 + b"\x01")
    # A schema that bounds nesting stops at its own depth, with no scan needed.
    with pytest.raises(msgspec.ValidationError, match="Expected `object`, got `array`"):
        codec(Resize).decode_payload(b"\x91" * 100_000 + b"\x01")


@pytest.mark.parametrize("value", SHAPES, ids=range(len(SHAPES)))
@pytest.mark.parametrize("limit", [1, 2, 5, 100])
def test_the_json_measure_of_nesting_is_exact_without_brackets_in_strings(
    value: Any, limit: int
) -> None:
    within = _json_nests_within(value, limit)
    try:
        msgspec.json.encode(value)
    except TypeError:  # an Ext, a tuple as a key: nothing is proven
        assert within is False
    else:
        assert within is (depth_of(value) <= limit)


@pytest.mark.parametrize(
    "value",
    [["[[[[" * 30, nested(98)], ["]]]]", nested(98)], ["][", nested(98)], {"}{": nested(98)}],
    ids=["openers", "closers", "balanced", "key"],
)
def test_brackets_in_strings_never_hide_or_invent_a_level(value: Any) -> None:
    c = codec(Any)
    assert decode_any(c.encode(value)) == value  # 99 levels: within the limit
    deeper = [value]
    while depth_of(deeper) <= MAX_DEPTH:
        deeper = [deeper]
    with pytest.raises(ValidationError, match="deeper than the limit"):
        c.encode(deeper)


def test_wide_payloads_are_measured_without_a_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scan(data: bytes, limit: int) -> bool:
        raise AssertionError("scanned")

    monkeypatch.setattr("asyncq._codec.nests_deeper", no_scan)
    loose = {"items": [{"sku": f"s{i}", "tags": ["a", "b"]} for i in range(200)]}
    c = codec(dict[str, Any])
    assert c.decode_payload(c.encode(loose)) == loose
    many = [Resize(f"https://x/{i}", Size(i + 1, 2)) for i in range(200)]
    typed: Codec[list[Resize]] = codec(list[Resize])
    assert typed.decode_payload(typed.encode(many)) == many


def test_raw_values_are_scanned_not_trusted() -> None:
    deep = msgspec.Raw(encode(nested(MAX_DEPTH + 1)))
    with pytest.raises(ValidationError, match="deeper than the limit"):
        codec(list[msgspec.Raw]).encode([deep])
    with pytest.raises(ValidationError, match="deeper than the limit"):
        codec(Any).encode([deep])
    assert codec(list[msgspec.Raw]).encode([msgspec.Raw(encode(nested(MAX_DEPTH - 1)))])


def test_views_refuse_to_decode_what_nests_past_the_limit_whatever_the_stack() -> None:
    """The CLI and admin views get an error, not a structure they would render recursively."""
    from asyncq._codec import MAX_DEPTH, decode_any

    within = b"\x91" * (MAX_DEPTH - 1) + b"\x01"
    assert decode_any(within) is not None
    with pytest.raises(msgspec.DecodeError, match="deeper than"):
        decode_any(b"\x91" * (MAX_DEPTH + 1) + b"\x01")
