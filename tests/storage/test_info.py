"""``exengine info`` summarises NDTiff and OME-Zarr datasets and reports the space they really
occupy."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

from exengine.storage import NDTiffStorage, OMEZarrStorage
from exengine.storage.dataset_info import allocated_bytes, summarise_dataset
from exengine.storage.ndtiff_reader import NDTiffReader
from napari_exengine.cli import main


def info(path) -> tuple[int, str]:
    out = io.StringIO()
    return main(["info", str(path)], stream=out), out.getvalue()


def size_mb(text: str) -> float:
    return float(re.search(r"Size on disk: ([\d.]+) MB", text).group(1))


def test_info_summarises_the_ome_zarr_datasets_acquire_writes(tmp_path):
    status = main(
        [
            "acquire",
            "--time",
            "3",
            "--channels",
            "DAPI,FITC",
            "--z",
            "0:2:2",
            "--storage",
            "napari-exengine.storage.omezarr",
            "--out",
            str(tmp_path),
            "--name",
            "zarr",
        ],
        stream=io.StringIO(),
    )
    assert status == 0
    path = tmp_path / "zarr_1.ome.zarr"
    status, text = info(path)
    assert status == 0, text
    assert (
        f"Dataset: {path}\nFormat: OME-Zarr 0.5 (zarr v3)\nFrames: 12\nFrame: 512 x 512 uint16\n"
        in text
    )
    assert "Pixel size: 0.65 µm; z step: 2 µm" in text  # the camera's, not a default
    assert (
        "  time: 3 (0, 1, 2)\n" in text
        and "  channel: 2 (DAPI, FITC)\n" in text
        and "  z: 2 (0, 1)\n" in text
    )
    assert re.search(r"First/last timestamps: \S+ / \S+", text) and "Not finished" not in text
    assert size_mb(text) == round(allocated_bytes(str(path)) / 1024**2, 1) >= 12 * 0.5
    assert info(path / "zarr.json")[1] == text  # the folder's zarr.json names the dataset too


def test_info_flags_an_ome_zarr_dataset_that_was_not_finished(tmp_path):
    storage = OMEZarrStorage(tmp_path, "open")
    for t in range(5):
        storage.put({"time": t}, np.full((16, 16), t, np.uint16), {})
    status, text = info(storage.path)
    assert status == 0 and "Frames: 5\n" in text and "  time: 5 (0, 1, 2, 3, 4)\n" in text
    assert "Not finished: still being written, or its writer stopped" in text
    storage.finish()


NDTIFF_WRITER = """
import sys
import numpy as np
from exengine.storage import NDTiffStorage
storage = NDTiffStorage(sys.argv[1], "killed")
print(storage.path if hasattr(storage, "path") else "", flush=True)
rng = np.random.default_rng(0)
for t in range(100000):
    storage.put({"time": t}, rng.integers(0, 65535, (512, 512), dtype=np.uint16), {"t": t})
    print(t, flush=True)
"""


def test_info_reports_the_real_size_of_a_sigkilled_ndtiff_dataset(tmp_path, sigkill_after_lines):
    """ndstorage makes each TIFF file 4 GB long (sparse) up front; after a SIGKILL it stays so."""
    sigkill_after_lines(NDTIFF_WRITER, str(tmp_path), lines=40)
    (dataset,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    apparent = sum(f.stat().st_size for f in dataset.rglob("*") if f.is_file())
    status, text = info(dataset)
    assert status == 0, text
    assert "Format: NDTiff v3\n" in text and int(re.search(r"Frames: (\d+)", text).group(1)) >= 40
    real = size_mb(text)
    assert real == round(allocated_bytes(str(dataset)) / 1024**2, 1)
    # frames written (512 KB each), not the files' length
    assert 40 * 0.5 <= real < 1000 < apparent / 1024**2


def test_info_refuses_what_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    status, _ = info(tmp_path)
    assert status == 2
    error = capsys.readouterr().err
    assert f"'{tmp_path}' is not a dataset" in error and "NDTiff" in error and "OME-Zarr" in error


def test_summary_of_an_empty_ome_zarr_dataset(tmp_path):
    storage = OMEZarrStorage(tmp_path, "empty")
    storage.finish()
    summary = summarise_dataset(storage.path)
    assert summary.frames == 0 and summary.format == "OME-Zarr" and "Frames: 0" in summary.text()
    assert os.path.isdir(storage.path)


def test_info_names_a_truncated_tiff_and_still_summarises(tmp_path):
    storage = NDTiffStorage(tmp_path, "cut")
    for t in range(3):
        storage.put({"time": t}, np.full((64, 64), t, np.uint16), {"t": t})
    storage.finish()
    (tiff,) = Path(storage.path).glob("*.tif")
    reader = NDTiffReader(storage.path)
    last = reader.entries[frozenset({"time": 2}.items())]
    reader.close()
    with open(tiff, "r+b") as f:
        f.truncate(last.pixel_offset + 10)  # the last frame cut short
    status, text = info(storage.path)
    assert status == 0, text
    assert "Frames: 3\n" in text and "Frame: 64 x 64 uint16" in text
    assert (
        "Truncated: 1 of 3 frames lie past the end of their file, which was cut short, and "
        f"cannot be read: {tiff.name} (1)"
    ) in text
    reader = NDTiffReader(storage.path)
    assert reader.read_frame({"time": 1})[0, 0] == 1  # the frames before the cut read as written
    with pytest.raises(OSError, match=f"{tiff.name} is truncated"):
        reader.read_metadata({"time": 2})
    reader.close()
