"""Journal serialization: round trips through pydantic, and errors that name the path to the bad value."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from agentflow.errors import SerializationError
from agentflow.runtime._serialize import (
    decode_state,
    decode_value,
    encode_state,
    encode_value,
    find_unserializable,
)


class Event(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    when: Any = None


class Agenda(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    items: list[Event] = []


@dataclass(frozen=True)
class Point:
    x: int
    y: int


def test_typed_value_round_trips_models_dataclasses_and_datetimes() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {"agenda": Agenda(items=[Event(name="a", when=when.isoformat())]), "at": when, "p": Point(1, 2)}
    tp = dict[str, Agenda | datetime | Point]
    text, kind = encode_value(value, tp)
    assert kind == "typed"
    assert decode_value(text, kind, tp) == value


def test_unserializable_nested_value_error_names_its_path() -> None:
    items = [Event(name=str(i), when=i) for i in range(3)] + [Event(name="3", when=threading.Lock())]
    with pytest.raises(SerializationError) as info:
        encode_value(Agenda(items=items), Agenda)
    assert info.value.path == "result.items[3].when"
    assert "lock" in info.value.message.lower()
    assert "serializable form" in info.value.message


def test_unserializable_state_error_names_the_state_field() -> None:
    class Notes(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

        seen: list[str] = []
        handle: dict[str, Any] = {}

    with pytest.raises(SerializationError) as info:
        encode_state(Notes(seen=["x"], handle={"db": object()}))
    assert info.value.path == "state.handle['db']"


def test_plain_values_without_a_type_round_trip_including_tuples() -> None:
    for value in (None, True, 3, 2.5, "s", [1, "a"], (1, 2), {"k": [1, None]}):
        text, kind = encode_value(value, None)
        assert decode_value(text, kind, None) == value
        assert type(decode_value(text, kind, None)) is type(value)


def test_model_without_a_declared_type_is_refused_with_the_fix() -> None:
    with pytest.raises(SerializationError) as info:
        encode_value({"a": [Point(1, 2)]}, None)
    assert info.value.path == "result['a'][0]"
    assert "annotate" in info.value.message


def test_non_string_dict_key_without_a_type_is_refused() -> None:
    with pytest.raises(SerializationError) as info:
        encode_value({1: "x"}, None)
    assert info.value.path == "result[1]"


def test_value_not_matching_its_declared_type_names_the_field() -> None:
    class Score(BaseModel):
        points: list[int]

    with pytest.raises(SerializationError) as info:
        encode_value({"points": [1, "two"]}, Score)
    assert info.value.path == "result.points[1]"


def test_find_unserializable_returns_none_for_serializable_values() -> None:
    assert find_unserializable({"a": [1, Point(1, 2), Agenda()]}, "result") is None


def test_state_round_trips_and_none_stays_none() -> None:
    agenda = Agenda(items=[Event(name="x", when="2026")])
    assert decode_state(encode_state(agenda), Agenda()) == agenda
    assert decode_state(encode_state(None), None) is None
