"""Property-based tests (Hypothesis, issue 17) of NDTiff, NDRAM and OME-Zarr storage: any valid
frame, coordinates and JSON metadata come back identical (also after reopening from disk), and any
invalid one is refused before anything is written."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import ndstorage
import numpy as np
import pydantic
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from exengine.data import DataCoordinates
from exengine.storage import NDRAMStorage, NDTiffStorage, OMEZarrStorage
from exengine.storage.ndtiff_reader import NDTiffReader
from exengine.storage.omezarr_reader import OMEZarrDataset
from strategies import (
    SETTINGS,
    datasets,
    invalid_values,
    ndtiff_dtypes,
    same_values,
    small_shapes,
    texts,
)


def _ndtiff_on_disk(path: str) -> dict[frozenset, tuple[np.ndarray, Any]]:
    """Every frame of a finished NDTiff dataset, by ndstorage and by our reader (which must
    agree)."""
    reader = NDTiffReader(path)
    try:
        ours = {
            frozenset(c.items()): (reader.read_frame(c), reader.read_metadata(c))
            for c in reader.coordinates()
        }
    finally:
        reader.close()
    with contextlib.redirect_stdout(io.StringIO()):  # ndstorage prints its progress
        dataset = ndstorage.Dataset(path)
    try:
        for c in dataset.get_image_coordinates_list():
            frame, metadata = ours[frozenset(c.items())]
            np.testing.assert_array_equal(dataset.read_image(**c), frame)
            assert dataset.read_metadata(**c) == metadata
        assert len(dataset.get_image_coordinates_list()) == len(ours)
    finally:
        dataset.close()
    return ours


def _assert_same(frames: list, read: Any) -> None:
    for coords, data, metadata in frames:
        back, back_metadata = read(coords)
        assert back.dtype == data.dtype and back.shape == data.shape
        np.testing.assert_array_equal(back, data)
        assert back_metadata == metadata


@SETTINGS
@given(datasets())
def test_ndtiff_round_trip(frames):
    with tempfile.TemporaryDirectory() as directory:
        storage = NDTiffStorage(directory, name="prop")
        for coords, data, metadata in frames:
            storage.put(coords, data, metadata)
        _assert_same(frames, lambda c: (storage.get_data(c), storage.get_metadata(c)))
        assert [dict(c) for c in storage.get_coordinates_list()] == [c for c, _, _ in frames]
        storage.close()
        on_disk = _ndtiff_on_disk(storage.path)
        assert len(on_disk) == len(frames)
        for coords, _data, _metadata in frames:
            (key,) = [k for k in on_disk if k == frozenset(coords.items())]
            assert same_values(dict(key), coords)
        _assert_same(frames, lambda c: on_disk[frozenset(c.items())])


@SETTINGS
@given(datasets(dtypes=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64])))
def test_ndram_round_trip(frames):
    storage = NDRAMStorage()
    for coords, data, metadata in frames:
        storage.put(coords, data, metadata)
    _assert_same(frames, lambda c: (storage.get_data(c), storage.get_metadata(c)))
    assert [dict(c) for c in storage.get_coordinates_list()] == [c for c, _, _ in frames]


# OME-Zarr maps each axis to an array dimension: int values are indices (non-negative; channel
# excepted)
# and str values are labels.
omezarr_datasets = datasets(kinds=st.sampled_from([st.integers(0, 6), texts]), max_frames=3)


@SETTINGS
@given(omezarr_datasets)
def test_omezarr_round_trip(frames):
    with tempfile.TemporaryDirectory() as directory:
        storage = OMEZarrStorage(directory, name="prop")
        for coords, data, metadata in frames:
            storage.put(coords, data, metadata)
        _assert_same(frames, lambda c: (storage.get_data(c), storage.get_metadata(c)))
        storage.close()
        dataset = OMEZarrDataset(storage.path)
        assert sorted(map(repr, dataset.coordinates())) == sorted(
            repr(DataCoordinates(c)) for c, _, _ in frames
        )
        _assert_same(frames, lambda c: (dataset.read_frame(c), dataset.read_metadata(c)))


def test_omezarr_refuses_ints_and_labels_on_one_axis(tmp_path):
    # found by the round trip above: time=0 and time='a' both took index 0, the second frame
    # overwriting the first
    storage = OMEZarrStorage(tmp_path, name="mixed")
    first = np.full((4, 4), 1, np.uint16)
    storage.put({"time": 0}, first, {})
    with pytest.raises(ValueError, match="'time'"):
        storage.put({"time": "a"}, np.full((4, 4), 2, np.uint16), {})
    storage.close()
    dataset = OMEZarrDataset(storage.path)
    assert dataset.coordinates() == [{"time": 0}]
    _assert_same(
        [({"time": 0}, first, {})], lambda c: (dataset.read_frame(c), dataset.read_metadata(c))
    )


# ---------------------------------------------------------------------------- invalid frames
# refused
class _Opaque:
    """Not JSON."""


#: per backend: frames of the dtypes and shapes it refuses (each also refuses non-arrays)
REFUSED_DTYPES = {
    "ndtiff": [np.int8, np.int16, np.float32, np.complex64, np.bool_],
    "ndram": [np.complex64, np.str_],
    "omezarr": [np.complex64, np.bool_],
}
REFUSED_SHAPES = {
    "ndtiff": [(0, 4), (4, 0), (0, 0), (5,), (), (2, 3, 4)],
    "ndram": [(0, 4), (4, 0), (5,), ()],
    "omezarr": [(0, 4), (4, 0), (5,), (), (2, 3, 4)],
}


def invalid_frames(backend: str) -> Any:
    return st.one_of(
        hnp.arrays(st.sampled_from(REFUSED_DTYPES[backend]), small_shapes),
        hnp.arrays(ndtiff_dtypes, st.sampled_from(REFUSED_SHAPES[backend])),
        st.sampled_from([[[1, 2], [3, 4]], "pixels", None]),
    )


NOT_JSON = [_Opaque(), b"raw", {1, 2}, 1j]


def invalid_metadata(backend: str) -> Any:
    """Metadata that is not a JSON object: not a dict, or holding values JSON cannot represent."""
    # see test_numpy_dates_...
    values = NOT_JSON + ([np.datetime64("2024")] if backend == "ndtiff" else [])
    return st.dictionaries(
        st.text(max_size=4), st.sampled_from(values), min_size=1, max_size=2
    ) | st.sampled_from([[1, 2], "text", 3])


def _files(path: str) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes (sparse NDTiff image files by their allocated size
    only)."""
    out = {}
    for folder, _dirs, names in os.walk(path):
        for name in names:
            file = Path(folder, name)
            out[str(file.relative_to(path))] = (
                b"blocks %d" % file.stat().st_blocks if name.endswith(".tif") else file.read_bytes()
            )
    return out


def _refusals(
    storage: Any, valid: list, invalid: tuple[dict[str, Any], Any, Any], path: str | None
) -> None:
    """Put ``valid`` frames, check the ``invalid`` one is refused with nothing written, then that
    the storage still takes a frame."""
    for coords, data, metadata in valid:
        storage.put(coords, data, metadata)
    before = _files(path) if path else None
    coords, data, metadata = invalid
    with pytest.raises((TypeError, ValueError)) as refused:
        storage.put(coords, data, metadata)
    assert str(refused.value)
    assert coords not in storage and len(storage) == len(valid)
    if path:
        assert _files(path) == before, "a refused frame changed the dataset's files"


@SETTINGS
@given(datasets(max_frames=2), st.data())
def test_invalid_frames_and_metadata_are_refused_before_anything_is_written(frames, data):
    backend = data.draw(st.sampled_from(["ndtiff", "ndram", "omezarr"]))
    valid = frames[:-1]
    coords, frame, metadata = frames[-1]
    what = data.draw(st.sampled_from(["frame", "metadata", "coordinates", "kind of value"]))
    if what == "kind of value":  # an axis given an int where it holds strs, or the other way round
        assume(valid)
        axis = data.draw(st.sampled_from(sorted(coords)))
        # OME-Zarr channels: ints and strs are labels
        assume(not (backend == "omezarr" and axis == "channel"))
        other = "label" if isinstance(coords[axis], int) else data.draw(st.integers(0, 6))
        invalid = ({**coords, axis: other}, frame, metadata)
    elif what == "frame":
        invalid = (coords, data.draw(invalid_frames(backend)), metadata)
    elif what == "metadata":
        invalid = (coords, frame, data.draw(invalid_metadata(backend)))
    else:
        axis = next(iter(coords))
        invalid = ({**coords, axis: data.draw(invalid_values)}, frame, metadata)
    if backend == "omezarr":
        valid = [(c, f, m) for c, f, m in valid if _omezarr_fits(c)]
        assume(_omezarr_fits(coords))
    with tempfile.TemporaryDirectory() as directory:
        storage = {
            "ndtiff": lambda: NDTiffStorage(directory, name="bad"),
            "ndram": NDRAMStorage,
            "omezarr": lambda: OMEZarrStorage(directory, name="bad"),
        }[backend]()
        try:
            if what == "coordinates":
                with pytest.raises(pydantic.ValidationError):
                    _refusals(storage, valid, invalid, getattr(storage, "path", None))
            else:
                _refusals(storage, valid, invalid, getattr(storage, "path", None))
            storage.put(coords, frame, metadata)  # the same coordinates, valid now: taken
            _assert_same(
                [*valid, (coords, frame, metadata)],
                lambda c: (storage.get_data(c), storage.get_metadata(c)),
            )
        finally:
            storage.close()


@pytest.mark.parametrize(
    "backend",
    [
        "ndram",
        "omezarr",
        "ndtiff",
    ],
)
def test_numpy_dates_in_metadata_are_refused_before_anything_is_written(backend, tmp_path):
    storage = {
        "ndtiff": lambda: NDTiffStorage(tmp_path, name="dates"),
        "ndram": NDRAMStorage,
        "omezarr": lambda: OMEZarrStorage(tmp_path, name="dates"),
    }[backend]()
    invalid = ({"time": 0}, np.zeros((2, 2), np.uint16), {"when": np.datetime64("2024-05-01")})
    _refusals(storage, [], invalid, getattr(storage, "path", None))
    storage.close()


def _omezarr_fits(coords: dict[str, Any]) -> bool:
    """Coordinates OME-Zarr takes: labels, or small non-negative indices (an array dimension
    each)."""
    return all(isinstance(v, str) or 0 <= v < 64 for v in coords.values())
