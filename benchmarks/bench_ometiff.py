"""OME-TIFF writing: our ``OMETiffStorage`` beside NDTiff, ome-writers' tifffile backend and a bare
tifffile page loop, on the same frames.

Run: ``python benchmarks/bench_ometiff.py [--frames N] [--runs R] [--size S]``. SxS (2048) uint16
frames (time x channel x z) are written to RAM (``/dev/shm``) so the figures measure the software,
each writer in turn within every run (interleaved, the order rotated each run), finishing included
(our OME-XML, ome-writers' own); GB/s are medians and bests over the runs (a slow run on a shared
machine is the kernel's time, for any writer), and ratios compare ours with each reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable

import numpy as np
import tifffile
from ome_writers import AcquisitionSettings, OmeTiffFormat, create_stream, dims_from_standard_axes

from _common import CHANNELS, Z, report, scratch_dir, tcz_frames
from exengine.data import DataHandler
from exengine.storage import NDTiffStorage, OMETiffStorage


def ours(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    with OMETiffStorage(folder, "ours", {"z-step_um": 1.0}, pixel_size_um=0.65) as storage:
        for i, c in enumerate(coords):
            storage.put(c, pool[i % 8], {"i": i})


def ours_handler(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    """Through a ``DataHandler`` (its storage thread), as an acquisition writes."""
    handler = DataHandler(OMETiffStorage(folder, "handler", pixel_size_um=0.65))
    for i, c in enumerate(coords):
        handler.put(c, pool[i % 8], {"i": i}, timeout=60)
    handler.await_completion(120)


def ndtiff(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    with NDTiffStorage(folder, "ndtiff") as storage:
        for i, c in enumerate(coords):
            storage.put(c, pool[i % 8], {"i": i})


def ome_writers_tifffile(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    sizes = {"t": len(coords) // (len(CHANNELS) * Z), "c": len(CHANNELS), "z": Z}
    height, width = pool[0].shape
    settings = AcquisitionSettings(
        root_path=os.path.join(folder, "theirs.ome.tiff"),
        dimensions=dims_from_standard_axes({**sizes, "y": height, "x": width}),
        dtype="uint16",
        format=OmeTiffFormat(backend="tifffile"),
    )
    with create_stream(settings) as stream:
        for i in range(len(coords)):
            stream.append(pool[i % 8])


def tifffile_loop(folder: str, coords: list[dict], pool: list[np.ndarray]) -> None:
    """The floor: tifffile's own page loop (one ``write`` per frame), no metadata."""
    with tifffile.TiffWriter(os.path.join(folder, "loop.tif"), bigtiff=True) as writer:
        for i in range(len(coords)):
            writer.write(pool[i % 8], photometric="minisblack", metadata=None)


WRITERS: dict[str, Callable[[str, list[dict], list[np.ndarray]], None]] = {
    "OME-TIFF (ours, put)": ours,
    "OME-TIFF (ours, DataHandler)": ours_handler,
    "NDTiff (ours, put)": ndtiff,
    "ome-writers 0.3 tifffile": ome_writers_tifffile,
    "tifffile page loop": tifffile_loop,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--size", type=int, default=2048)
    args = parser.parse_args()
    count = args.frames - args.frames % (len(CHANNELS) * Z)
    coords, pool = tcz_frames(count, args.size)
    gigabytes = count * pool[0].nbytes / 1e9
    rates: dict[str, list[float]] = {name: [] for name in WRITERS}
    names = list(WRITERS)
    for run in range(args.runs):
        for name in names[run % len(names) :] + names[: run % len(names)]:  # rotated each run
            write = WRITERS[name]
            folder = scratch_dir()
            try:
                start = time.perf_counter()
                write(folder, coords, pool)
                rates[name].append(gigabytes / (time.perf_counter() - start))
            finally:
                shutil.rmtree(folder)
    median = {name: float(np.median(values)) for name, values in rates.items()}
    best = {name: max(values) for name, values in rates.items()}
    print(f"{count} frames {args.size}x{args.size} uint16 ({gigabytes:.2f} GB), {args.runs} runs")
    for name, value in median.items():
        spread = f"{min(rates[name]):.2f}-{best[name]:.2f}"
        print(f"  {name:32} {value:6.2f} GB/s (runs {spread})")
    first = "OME-TIFF (ours, put)"
    for title, figures in (("medians", median), ("best runs", best)):
        print(title)
        report([(first, figures[first], n, figures[n], "GB/s") for n in WRITERS if n != first])


if __name__ == "__main__":
    main()
