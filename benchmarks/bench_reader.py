"""Opening a 10,000-frame NDTiff dataset (time 100 x z 50 x 2 channels, 256x256) as layers, and the
latency of showing a new slider position, vs ndstorage's own ``Dataset`` + ``as_array`` in the same
run.

Run: ``python benchmarks/bench_reader.py``. Medians of several runs.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import time

import ndstorage
import numpy as np

from _common import median_of, report, scratch_dir
from napari_exengine.reader import read_ndtiff

RUNS = 5


def write_dataset(root: str) -> str:
    dataset = ndstorage.NDTiffDataset(root, name="big", writable=True)
    dataset.initialize({"z-step_um": 1.0})
    frame = np.random.default_rng(0).integers(0, 4000, (256, 256), dtype=np.uint16)
    for t in range(100):
        for z in range(50):
            for channel in ("DAPI", "GFP"):
                dataset.put_image(
                    {"time": t, "channel": channel, "z": z}, frame, {"PixelSizeUm": 0.5}
                )
    dataset.finish()
    return dataset.path


def open_ours(path: str) -> tuple[float, object]:
    start = time.perf_counter()
    layers = read_ndtiff(path)
    return time.perf_counter() - start, layers


def open_reference(path: str) -> tuple[float, object]:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        array = ndstorage.Dataset(path).as_array(axes=["time", "z", "channel"])
    return time.perf_counter() - start, array


def slider_latency(read_plane, positions) -> float:
    start = time.perf_counter()
    for position in positions:
        np.asarray(read_plane(position))
    return (time.perf_counter() - start) / len(positions) * 1000


def main() -> None:
    root = scratch_dir()
    try:
        path = write_dataset(root)
        ours_open = median_of(RUNS, lambda: open_ours(path)[0])
        ref_open = median_of(RUNS, lambda: open_reference(path)[0])
        layers = open_ours(path)[1]
        array = open_reference(path)[1]
        data = layers[0][0]
        rng = np.random.default_rng(1)
        positions = [(int(t), int(z)) for t, z in rng.integers(0, [100, 50], (200, 2))]
        ours_ms = median_of(RUNS, lambda: slider_latency(lambda p: data[p], positions))
        ref_ms = median_of(RUNS, lambda: slider_latency(lambda p: array[p[0], p[1], 0], positions))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(
        [
            (
                "open 10,000 frames as layers (s)",
                ours_open,
                "ndstorage Dataset+as_array",
                ref_open,
                "s",
            ),
            ("show a new slider position (ms)", ours_ms, "ndstorage dask slice", ref_ms, "ms"),
        ]
    )


if __name__ == "__main__":
    main()
