"""Hypothesis strategies shared by the property-based tests of the kernel and the storage."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

AXES = [
    "time",
    "z",
    "channel",
    "position",
    "row",
    "column",
    "angle",
    "échantillon",
    "t_2",
    "resolution_level",
]
axis_names = st.sampled_from(AXES) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
ints = st.integers(-(2**63), 2**63 - 1)
texts = st.text(max_size=12)
coordinate_values = ints | texts
valid_dicts = st.dictionaries(axis_names, coordinate_values, max_size=6)

#: values DataCoordinates refuses, each with the kind the error names
invalid_values = st.one_of(
    st.booleans(),
    st.sampled_from([np.bool_(True), np.bool_(False)]),
    st.floats().filter(lambda f: not float(f).is_integer()),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=3),
    st.complex_numbers(),
    st.builds(np.array, st.lists(st.integers(0, 9), max_size=3)),
    st.just(object()),
)
#: axis names DataCoordinates refuses (not Python identifiers)
invalid_axis_names = st.text(max_size=6).filter(lambda s: not s.isidentifier())

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
json_metadata = st.dictionaries(st.text(max_size=8), json_values, max_size=4)

EITHER_KIND = st.sampled_from([ints, texts])  # per axis: ints or strs
small_shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))
ndtiff_dtypes = st.sampled_from([np.uint8, np.uint16])


@st.composite
def datasets(
    draw: Any, dtypes: Any = ndtiff_dtypes, kinds: Any = EITHER_KIND, max_frames: int = 4
) -> list[tuple[dict[str, Any], np.ndarray, dict[str, Any]]]:
    """Frames of one dataset: distinct coordinates over one set of axes, each axis taking ints or
    strs (as NDTiff requires), one frame shape and dtype, JSON metadata."""
    axes = draw(
        st.lists(axis_names.filter(lambda a: a != "self"), min_size=1, max_size=3, unique=True)
    )
    shape, dtype = draw(small_shapes), draw(dtypes)
    values = {axis: draw(kinds) for axis in axes}
    coords = draw(
        st.lists(
            st.fixed_dictionaries(values),
            min_size=1,
            max_size=max_frames,
            unique_by=lambda c: frozenset(c.items()),
        )
    )
    frames = [draw(hnp.arrays(dtype, shape)) for _ in coords]
    return [(c, f, draw(json_metadata)) for c, f in zip(coords, frames, strict=True)]


def same_values(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, with every value of the same type (an int stays an int, a str a str)."""
    return a == b and all(type(a[k]) is type(b[k]) for k in a)
