"""DataCoordinates and DataCoordinatesIterator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from exengine.data import DataCoordinates, DataCoordinatesIterator


def test_access_add_axis_and_dict_order():
    coords = DataCoordinates(time=3, channel="DAPI", z=5)
    assert coords.time == 3 and coords["channel"] == "DAPI"
    coords.position = 2
    coords["row"] = 1
    assert dict(coords) == {"time": 3, "channel": "DAPI", "z": 5, "position": 2, "row": 1}
    assert list(dict(coords)) == ["time", "channel", "z", "position", "row"]
    with pytest.raises(AttributeError, match="axes"):
        _ = coords.missing


def test_equality_and_hash_like_the_dict():
    a = DataCoordinates(time=1, channel="GFP")
    b = DataCoordinates({"channel": "GFP", "time": 1})
    assert a == b == {"time": 1, "channel": "GFP"}
    assert hash(a) == hash(b) == hash(frozenset({"time": 1, "channel": "GFP"}.items()))
    assert {a: "x"}[{"channel": "GFP", "time": 1} and b] == "x"


def test_numpy_ints_and_whole_floats_become_int():
    coords = DataCoordinates(time=np.int64(4), z=np.uint16(2), position=3.0)
    assert coords == {"time": 4, "z": 2, "position": 3}
    assert all(type(v) is int for v in coords.values())


@pytest.mark.parametrize(
    "value", [1.5, True, None, np.arange(3), [1, 2], {"a": 1}, np.float32(0.25)]
)
def test_bad_values_name_the_axis(value):
    with pytest.raises(ValueError, match="'time'"):
        DataCoordinates(time=value)
    coords = DataCoordinates()
    with pytest.raises(ValueError, match="'time'"):
        coords.time = value


def test_axis_names_must_be_identifiers():
    with pytest.raises(ValueError, match="identifiers"):
        DataCoordinates({"1bad": 1})
    with pytest.raises(ValueError, match="identifiers"):
        DataCoordinates()["has space"] = 1


def test_iterator_from_list_tuple_single_and_existing():
    items = [{"time": 0}, DataCoordinates(time=1)]
    finite = DataCoordinatesIterator.create(items)
    assert finite.is_finite()
    assert list(finite) == list(finite) == [{"time": 0}, {"time": 1}]
    assert list(DataCoordinatesIterator.create(tuple(items))) == [{"time": 0}, {"time": 1}]
    assert list(DataCoordinatesIterator.create({"time": 5})) == [{"time": 5}]
    assert DataCoordinatesIterator.create(finite) is finite
    with pytest.raises(TypeError):
        DataCoordinatesIterator.create(42)


def test_generators_are_lazy_and_may_be_infinite():
    produced = []

    def infinite():
        for i in itertools.count():
            produced.append(i)
            yield {"time": i}

    iterator = DataCoordinatesIterator.create(infinite())
    assert not iterator.is_finite()
    assert produced == []
    first = list(itertools.islice(iterator, 3))
    assert first == [{"time": 0}, {"time": 1}, {"time": 2}]
    assert produced == [0, 1, 2]
    assert iterator.might_produce_coordinates({"time": 1}) is True
    assert iterator.might_produce_coordinates({"time": 99}) is None
    assert not DataCoordinatesIterator.create(iter([{"z": 0}])).is_finite()


def test_might_produce_with_sub_coordinates():
    iterator = DataCoordinatesIterator.create(
        [{"time": t, "z": z} for t in range(3) for z in range(2)]
    )
    assert iterator.might_produce_coordinates({"time": 2}) is True
    assert iterator.might_produce_coordinates({"time": 2, "z": 1}) is True
    assert iterator.might_produce_coordinates({"time": 3}) is False
    assert iterator.might_produce_coordinates({"channel": "DAPI"}) is False
