"""Property-based tests (Hypothesis, issue 17) of ``DataCoordinates``: valid dicts round trip;
equality and hashing are those of the dict; invalid values and axis names raise a
``pydantic.ValidationError`` naming the axis."""

from __future__ import annotations

import pickle

import numpy as np
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exengine.data import DataCoordinates
from strategies import (
    SETTINGS,
    axis_names,
    coordinate_values,
    invalid_axis_names,
    invalid_values,
    same_values,
    valid_dicts,
)


@SETTINGS
@given(valid_dicts)
def test_valid_dicts_round_trip(d):
    coords = DataCoordinates(d)
    assert coords == d and list(coords.items()) == list(d.items()) and same_values(dict(coords), d)
    assert DataCoordinates(**d) == coords and DataCoordinates(coordinate_dict=d) == coords
    for axis, value in d.items():
        assert coords[axis] == value
        if not hasattr(dict, axis) and not hasattr(DataCoordinates, axis):
            assert getattr(coords, axis) == value
    copied = pickle.loads(pickle.dumps(coords))
    assert type(copied) is DataCoordinates and list(copied.items()) == list(coords.items())
    rebuilt = DataCoordinates()
    for axis, value in d.items():
        rebuilt[axis] = value
    assert rebuilt == coords


@SETTINGS
@given(st.dictionaries(axis_names, st.integers(-1000, 1000), max_size=4))
def test_numpy_integers_and_whole_floats_become_ints(d):
    as_numpy = {a: np.int64(v) for a, v in d.items()}
    as_floats = {a: float(v) for a, v in d.items()}
    for converted in (DataCoordinates(as_numpy), DataCoordinates(as_floats)):
        assert same_values(dict(converted), d)


@SETTINGS
@given(valid_dicts, valid_dicts, st.randoms())
def test_equality_and_hash_are_those_of_the_dict(d1, d2, random):
    c1, c2 = DataCoordinates(d1), DataCoordinates(d2)
    assert (c1 == c2) == (d1 == d2) and (c1 == d2) == (d1 == d2) and (d1 == c2) == (d1 == d2)
    shuffled = list(d1.items())
    random.shuffle(shuffled)
    reordered = DataCoordinates(dict(shuffled))
    assert reordered == c1 and hash(reordered) == hash(c1)
    assert ({c1} & {reordered}) == {c1}
    if d1 == d2:
        assert hash(c1) == hash(c2)


@SETTINGS
@given(valid_dicts, axis_names, invalid_values, st.data())
def test_invalid_values_raise_a_validation_error_naming_the_axis(d, axis, value, data):
    d = {a: v for a, v in d.items() if a != axis}
    items = list(d.items())
    items.insert(data.draw(st.integers(0, len(items))), (axis, value))
    with pytest.raises(pydantic.ValidationError) as raised:
        DataCoordinates(dict(items))
    assert isinstance(raised.value, ValueError) and repr(axis) in str(raised.value)
    coords = DataCoordinates(d)
    with pytest.raises(pydantic.ValidationError, match=repr(axis).replace("\\", "\\\\")):
        coords[axis] = value
    assert coords == d  # unchanged


@SETTINGS
@given(valid_dicts, invalid_axis_names, coordinate_values)
def test_invalid_axis_names_raise_a_validation_error_naming_them(d, axis, value):
    with pytest.raises(pydantic.ValidationError) as raised:
        DataCoordinates({**d, axis: value})
    assert repr(axis) in str(raised.value)
