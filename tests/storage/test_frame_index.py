"""The frame index keeps a window of records in memory and the rest in a file: storages find every
frame, refuse every duplicate, and an open-ended run's memory stays flat."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc

import numpy as np
import pytest

import exengine.storage._frame_index as frame_index
from exengine.data import DataHandler
from exengine.kernel.data_coords import DataCoordinates
from exengine.storage import NDTiffStorage, OMEZarrStorage
from exengine.storage._frame_index import FrameIndex
from exengine.storage.ndtiff_reader import NDTiffReader
from exengine.storage.omezarr_reader import OMEZarrDataset


def test_records_move_to_a_file_and_are_all_found_in_order():
    index = FrameIndex(in_memory=10)
    coords = [DataCoordinates({"time": t, "channel": "DAPI"}) for t in range(55)]
    for t, c in enumerate(coords):
        index.add(c, ("file.tif", t))
    assert index._db_path is not None and os.path.isfile(index._db_path)
    assert len(index._recent) <= 10
    assert len(index) == 55
    assert list(index) == coords
    assert index.get(DataCoordinates({"channel": "DAPI", "time": 3})) == ("file.tif", 3)
    assert DataCoordinates({"time": 54, "channel": "DAPI"}) in index
    assert DataCoordinates({"time": 55, "channel": "DAPI"}) not in index
    assert index.get(DataCoordinates({"time": 99})) is None
    assert index.pop(coords[-1]) == ("file.tif", 54)
    assert len(index) == 54
    path = index._db_path
    index.close()
    assert not os.path.exists(path) and len(index) == 0


def test_in_memory_is_checked():
    with pytest.raises(ValueError, match="in_memory must be a whole number >= 2, got 1"):
        FrameIndex(in_memory=1)


@pytest.fixture
def small_window(monkeypatch):
    monkeypatch.setattr(frame_index, "DEFAULT_IN_MEMORY", 50)


def _frame(t):
    return np.full((16, 16), t, np.uint16)


@pytest.mark.parametrize("kind", ["ndtiff", "omezarr"])
def test_storages_find_old_frames_and_refuse_old_duplicates(small_window, tmp_path, kind):
    storage = (NDTiffStorage if kind == "ndtiff" else OMEZarrStorage)(tmp_path, "window")
    for t in range(300):
        storage.put({"time": t}, _frame(t), {"t": t})
    assert storage.get_data({"time": 0})[0, 0] == 0
    assert storage.get_metadata({"time": 1})["t"] == 1
    assert {"time": 2} in storage
    with pytest.raises(ValueError, match="already stored"):
        storage.put({"time": 3}, _frame(0), {})
    assert [c["time"] for c in storage.get_coordinates_list()] == list(range(300))
    storage.finish()
    if kind == "ndtiff":
        reader = NDTiffReader(storage.path)
        assert reader.read_frame({"time": 3})[0, 0] == 3 and len(reader.entries) == 300
        reader.close()
        storage.close()
    else:
        dataset = OMEZarrDataset(storage.path)
        assert dataset.read_frame({"time": 3})[0, 0] == 3 and len(dataset.records) == 300


@pytest.mark.parametrize("kind", ["ndtiff", "omezarr"])
def test_an_open_ended_run_keeps_storage_memory_flat(tmp_path, monkeypatch, kind):
    """20,000 frames past a 1,000-frame window: what the storage and the data handler keep per frame
    stays in the window (before: about 1.1 KB a frame with NDTiff, 0.7 KB with OME-Zarr, plus
    the metadata)."""
    monkeypatch.setattr(frame_index, "DEFAULT_IN_MEMORY", 1000)
    storage = (NDTiffStorage if kind == "ndtiff" else OMEZarrStorage)(tmp_path, "flat")
    handler = DataHandler(storage, memory_budget_bytes=2**20)  # a backlog of 2,000 frames at most
    frame = np.zeros((16, 16), np.uint16)

    def acquire(first, count):
        for t in range(first, first + count):
            handler.put({"time": t}, frame, {"ElapsedTime-ms": float(t), "Camera": "Camera"})
        deadline = time.monotonic() + 120
        while handler.frames_stored < first + count:
            assert time.monotonic() < deadline, "the storage did not keep up"
            time.sleep(0.01)
        gc.collect()

    acquire(0, 3000)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        acquire(3000, 20000)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown / 20000 < 40, f"{grown / 20000:.0f} bytes kept per frame"
    handler.finish()
    handler.await_completion(timeout=60)
    assert len(storage.get_coordinates_list()) == 23000
