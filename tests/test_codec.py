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
from asyncq._codec import Codec, decode_any, encode


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
