"""OME-Zarr vs NDTiff storage, and the cost of a processor chain, through the DataHandler.

Run: ``python benchmarks/bench_plugins.py``. 2,000 frames of 512x512 uint16 with time/channel/z
coordinates; medians of several runs measured side by side.
"""

from __future__ import annotations

import shutil
import statistics

from _common import report, scratch_dir
from bench_data import FRAMES, through_handler, workload
from exengine.processors import ProcessorChain
from exengine.storage import NDTiffStorage, OMEZarrStorage

RUNS = 5


def main() -> None:
    coords, pool = workload()
    root = scratch_dir()
    runs: dict[str, list[float]] = {"ndtiff": [], "zarr": [], "chain": []}
    try:
        for _ in range(RUNS):  # interleaved, so drift of the shared disk affects all alike
            runs["ndtiff"].append(through_handler(coords, pool, NDTiffStorage(root, "tiff")))
            runs["zarr"].append(
                through_handler(coords, pool, OMEZarrStorage(root, "zarr", pixel_size_um=0.5))
            )
            runs["chain"].append(
                through_handler(
                    coords,
                    pool,
                    NDTiffStorage(root, "chain"),
                    ProcessorChain([lambda c, d, m: (c, d, m)]),
                )
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ndtiff, zarr, chain = (statistics.median(runs[k]) for k in ("ndtiff", "zarr", "chain"))
    report(
        [
            (f"OME-Zarr storage, {FRAMES} frames (frames/s)", zarr, "NDTiff storage", ndtiff, ""),
            (
                "NDTiff + no-op processor chain (frames/s)",
                chain,
                "NDTiff without processors",
                ndtiff,
                "",
            ),
        ]
    )


if __name__ == "__main__":
    main()
