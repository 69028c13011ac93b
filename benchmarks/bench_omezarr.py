"""OME-Zarr writing: our ``OMEZarrStorage`` beside ome-writers' zarr backends, on the same frames.

Run: ``python benchmarks/bench_omezarr.py [--runs R] [--quick]``. uint16 noise frames (time x 2
channels x 2 z) of 2048x2048 and of 512x512 are written to RAM (``/dev/shm``) and to the disk (the
system's temporary folder), each writer in turn within every run (interleaved, the order rotated
each run). A write is timed from the first frame to the dataset being finished and every file and
folder of it fsynced (the same walk for every writer: the bytes are on the device). GB/s are medians
over the runs (bests in brackets) and ratios compare ours with each of ome-writers' backends.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import time
from collections.abc import Callable

import numpy as np
from ome_writers import AcquisitionSettings, OmeZarrFormat, create_stream, dims_from_standard_axes

from _common import CHANNELS, Z, report, scratch_dir, tcz_frames
from exengine.data import DataHandler, PlannedData
from exengine.storage import OMEZarrStorage

#: frame size -> frames written (about 0.4 GB each)
WORKLOADS = {2048: 48, 512: 800}
QUICK = {2048: 16, 512: 200}

Writer = Callable[[str, list[dict], list[np.ndarray]], None]


def planned(coords: list[dict], pool: list[np.ndarray]) -> PlannedData:
    """What an acquisition tells its storage before the first frame."""
    sizes = {"time": coords[-1]["time"] + 1, "channel": len(CHANNELS), "z": Z}
    return PlannedData(sizes, {"channel": CHANNELS}, pool[0].shape, "uint16", 0.65)


def ours(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    with OMEZarrStorage(folder, "ours", pixel_size_um=0.65) as storage:
        storage.prepare(planned(coords, pool))
        for i, c in enumerate(coords):
            storage.put(c, pool[i % 8], {"i": i})


def ours_handler(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    """Through a ``DataHandler`` (its storage thread), as an acquisition writes."""
    storage = OMEZarrStorage(folder, "handler", pixel_size_um=0.65)
    storage.prepare(planned(coords, pool))
    handler = DataHandler(storage)
    for i, c in enumerate(coords):
        handler.put(c, pool[i % 8], {"i": i}, timeout=60)
    handler.await_completion(120)


def ome_writers(backend: str) -> Writer:
    """ome-writers 0.3 with ``backend``, given each frame's metadata as we are."""

    def write(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
        sizes = {"t": len(coords) // (len(CHANNELS) * Z), "c": len(CHANNELS), "z": Z}
        height, width = pool[0].shape
        settings = AcquisitionSettings(
            root_path=os.path.join(folder, "theirs.ome.zarr"),
            dimensions=dims_from_standard_axes({**sizes, "y": height, "x": width}),
            dtype="uint16",
            format=OmeZarrFormat(backend=backend),
        )
        with create_stream(settings) as stream:
            for i in range(len(coords)):
                stream.append(pool[i % 8], frame_metadata={"i": i})

    return write


def fsync_tree(folder: str) -> None:
    """fsync every file and folder under ``folder`` (and it)."""
    for parent, _, files in os.walk(folder, topdown=False):
        for name in [*files, "."]:
            flags = os.O_RDONLY | (os.O_DIRECTORY if name == "." else 0)
            fd = os.open(os.path.join(parent, name), flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


WRITERS: dict[str, Writer] = {
    "ours, put": ours,
    "ours, DataHandler": ours_handler,
    **{
        f"ome-writers {name}": ome_writers(name)
        for name in ("tensorstore", "acquire-zarr")
        if importlib.util.find_spec(name.replace("-", "_"))
    },
}


def measure(size: int, count: int, ram: bool, runs: int) -> dict[str, list[float]]:
    """GB/s of every writer over ``runs`` interleaved runs."""
    coords, pool = tcz_frames(count - count % (len(CHANNELS) * Z), size)
    gigabytes = len(coords) * pool[0].nbytes / 1e9
    rates: dict[str, list[float]] = {name: [] for name in WRITERS}
    names = list(WRITERS)
    for run in range(runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:  # rotated each run
            folder = scratch_dir(ram)
            try:
                start = time.perf_counter()
                WRITERS[name](folder, coords, pool)
                fsync_tree(folder)
                rates[name].append(gigabytes / (time.perf_counter() - start))
            finally:
                shutil.rmtree(folder)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer frames (a smoke test)")
    args = parser.parse_args()
    workloads = QUICK if args.quick else WORKLOADS
    first = "ours, put"
    for ram in (True, False):
        for size, count in workloads.items():
            rates = measure(size, count, ram, args.runs)
            where = "RAM (/dev/shm)" if ram else "disk (temporary folder)"
            gigabytes = (count - count % (len(CHANNELS) * Z)) * size * size * 2 / 1e9
            print(f"\n{where}: {count} frames {size}x{size} uint16 ({gigabytes:.2f} GB)")
            median = {name: float(np.median(values)) for name, values in rates.items()}
            for name, values in rates.items():
                print(f"  {name:28} {median[name]:6.2f} GB/s (best {max(values):.2f})")
            report([(first, median[first], n, median[n], "GB/s") for n in WRITERS if n != first])


if __name__ == "__main__":
    main()
