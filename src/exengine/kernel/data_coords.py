"""``DataCoordinates`` (where a piece of data sits in an experiment) and
``DataCoordinatesIterator``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Union

import numpy as np

CoordinateValue = int | str
CoordinatesLike = Union["DataCoordinates", Mapping[str, CoordinateValue]]

_FAST_TYPES = frozenset((int, str))
#: Axis names already found to be identifiers, so the common case checks them by one set lookup.
_VALID_AXES: set[str] = set()
_MAX_VALID_AXES = 10_000
_dict_update = dict.update


def _validate_value(axis: Any, value: Any) -> CoordinateValue:
    """Return ``value`` as an int or str, or raise a ``ValidationError`` that names the axis."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    if not isinstance(axis, str) or not axis.isidentifier():
        raise _invalid_axis_name(axis)
    if isinstance(value, (bool, np.bool_)):
        raise _bad_value(axis, value, f"the bool {value!r}")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer():
            return int(value)
        raise _bad_value(axis, value, f"the fractional number {value!r}")
    if isinstance(value, (int, str)):  # subclasses (e.g. IntEnum, str subclasses)
        return int(value) if isinstance(value, int) else str(value)
    raise _bad_value(axis, value, f"{type(value).__name__} {value!r}")


def _coordinate_error(axis: Any, value: Any, message: str) -> ValueError:
    """A ``pydantic.ValidationError`` (a ``ValueError``), as ExEngine raises, carrying ``message``.

    Built only when validation fails, so pydantic is imported only then.
    """
    from pydantic_core import PydanticCustomError, ValidationError

    detail = {
        "type": PydanticCustomError("coordinate_value", "{message}", {"message": message}),
        "loc": (str(axis),),
        "input": value,
    }
    return ValidationError.from_exception_data("DataCoordinates", [detail])  # type: ignore[list-item]


def _bad_value(axis: str, value: Any, got: str) -> ValueError:
    return _coordinate_error(
        axis, value, f"Axis {axis!r}: coordinate values are ints or strs, got {got}"
    )


def _invalid_axis_name(axis: Any) -> ValueError:
    return _coordinate_error(
        axis, axis, f"Axis names must be Python identifiers (e.g. 'time', 'z'), got {axis!r}"
    )


class DataCoordinates(dict):
    """The position of one piece of data along named axes, e.g. ``time=3, channel='DAPI', z=5``.

    Values are ints or strs (numpy integers and whole floats become ints). Values are readable and
    writable as attributes or items; ``dict(coords)`` keeps insertion order; a ``DataCoordinates``
    equals the equivalent dict and hashes the same regardless of axis order.
    """

    __slots__ = ()

    def __init__(self, coordinate_dict: CoordinatesLike | None = None, **kwargs: Any) -> None:
        if coordinate_dict is not None:
            if type(coordinate_dict) is not dict and not isinstance(coordinate_dict, Mapping):
                raise TypeError(
                    "DataCoordinates takes a mapping of axis name to int/str, got "
                    f"{coordinate_dict!r}"
                )
            if kwargs:
                raise ValueError(
                    "Give the axes either as coordinate_dict or as keywords, not both: got "
                    f"coordinate_dict={dict(coordinate_dict)!r} and {kwargs!r}"
                )
            kwargs = coordinate_dict  # type: ignore[assignment]
        for axis, value in kwargs.items():
            if type(value) not in _FAST_TYPES or axis not in _VALID_AXES:
                _dict_update(self, {a: _validate_value(a, v) for a, v in kwargs.items()})
                _check_axis_names(self)
                return
        _dict_update(self, kwargs)

    @property
    def coordinate_dict(self) -> DataCoordinates:
        """The axis -> value mapping (ExEngine's attribute): these coordinates themselves, live."""
        return self

    @coordinate_dict.setter
    def coordinate_dict(self, value: Mapping[str, Any]) -> None:
        validated = DataCoordinates(value)
        self.clear()
        dict.update(self, validated)

    def __getattr__(self, name: str) -> CoordinateValue:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"DataCoordinates has no axis {name!r}; axes: {list(self)}"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "coordinate_dict":
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, axis: str, value: Any) -> None:
        if type(axis) is not str or not axis.isidentifier():
            raise _invalid_axis_name(axis)
        dict.__setitem__(self, axis, _validate_value(axis, value))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for axis, value in dict(*args, **kwargs).items():
            self[axis] = value

    def setdefault(self, axis: str, default: Any = None) -> CoordinateValue:  # type: ignore[override]
        if axis not in self:
            self[axis] = default
        return self[axis]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"DataCoordinates({inner})"

    def copy(self) -> DataCoordinates:
        new = DataCoordinates()
        dict.update(new, self)
        return new

    def __reduce__(self) -> tuple:
        return (DataCoordinates, (dict(self),))

    def matches(self, partial: Mapping[str, CoordinateValue]) -> bool:
        """True when every axis of ``partial`` has the same value here (sub-coordinates match)."""
        get = self.get
        missing = object()
        return all(get(axis, missing) == value for axis, value in partial.items())


def _check_axis_names(coords: Mapping[Any, Any]) -> None:
    for axis in coords:
        if axis not in _VALID_AXES:
            if not isinstance(axis, str) or not axis.isidentifier():
                raise _invalid_axis_name(axis)
            if len(_VALID_AXES) < _MAX_VALID_AXES:
                _VALID_AXES.add(axis)


def as_coordinates(value: Any) -> DataCoordinates:
    """Return ``value`` (a ``DataCoordinates`` or a mapping) as ``DataCoordinates``."""
    if type(value) is DataCoordinates:
        return value
    if isinstance(value, Mapping):
        return DataCoordinates(value)
    raise TypeError(f"Expected DataCoordinates or a dict of axis name to int/str, got {value!r}")


class DataCoordinatesIterator:
    """A lazy, possibly infinite, sequence of ``DataCoordinates``.

    Build one with :meth:`create`. Finite sources (lists, tuples, single coordinates) can be
    iterated again and answer :meth:`might_produce_coordinates` exactly; generators and iterators
    are consumed lazily, once, and answer ``None`` (unknown) for coordinates they have not produced
    yet.
    """

    def __init__(self, source: list[DataCoordinates] | Iterator[Any], finite: bool) -> None:
        self._finite = finite
        self._source = source
        self._produced: list[DataCoordinates] = []

    @classmethod
    def create(
        cls,
        image_coordinate_iterable: DataCoordinatesIterator
        | CoordinatesLike
        | Iterable[CoordinatesLike]
        | None,
    ) -> DataCoordinatesIterator:
        """Build an iterator from coordinates, a dict, a list/tuple/generator/iterator of them, or
        an iterator."""
        source = image_coordinate_iterable
        if isinstance(source, DataCoordinatesIterator):
            return source
        if source is None:
            raise TypeError(
                "DataCoordinatesIterator.create needs coordinates, a list of them or a generator"
            )
        if isinstance(source, Mapping):
            return cls([as_coordinates(source)], finite=True)
        if isinstance(source, (list, tuple)):
            return cls([as_coordinates(item) for item in source], finite=True)
        if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
            raise TypeError(
                "DataCoordinatesIterator.create takes coordinates, a dict, or a "
                "list/tuple/generator of them; "
                f"got {type(source).__name__}"
            )
        return cls(iter(source), finite=False)

    def __iter__(self) -> Iterator[DataCoordinates]:
        if self._finite:
            return iter(self._source)  # type: ignore[arg-type]
        return self._iterate_lazily()

    def _iterate_lazily(self) -> Iterator[DataCoordinates]:
        yield from self._produced
        for item in self._source:  # type: ignore[union-attr]
            coords = as_coordinates(item)
            self._produced.append(coords)
            yield coords

    def is_finite(self) -> bool:
        """True when the sequence is known to end (built from a list, tuple or single
        coordinates)."""
        return self._finite

    def might_produce_coordinates(self, coordinates: CoordinatesLike) -> bool | None:
        """True if some produced coordinates match ``coordinates`` (sub-coordinates allowed).

        False when a finite sequence cannot produce them; None when that is not known yet.
        """
        wanted = as_coordinates(coordinates)
        candidates = self._source if self._finite else self._produced
        if any(c.matches(wanted) for c in candidates):  # type: ignore[union-attr]
            return True
        return False if self._finite else None

    def __len__(self) -> int:
        if not self._finite:
            raise TypeError("An infinite or lazy DataCoordinatesIterator has no length")
        return len(self._source)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        if self._finite:
            return f"DataCoordinatesIterator({len(self._source)} coordinates)"  # type: ignore[arg-type]
        return "DataCoordinatesIterator(lazy)"


def counting_coordinates(axis: str = "image") -> DataCoordinatesIterator:
    """An infinite iterator ``{axis: 0}, {axis: 1}, ...`` used when an event is given none."""
    return DataCoordinatesIterator.create({axis: i} for i in itertools.count())
