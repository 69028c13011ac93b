"""Helpers shared by the benchmarks: medians of repeated runs and side-by-side reporting."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_of(runs: int, measure: Callable[[], float]) -> float:
    """The median of ``runs`` calls of ``measure`` (each returns one figure)."""
    return statistics.median(measure() for _ in range(runs))


def per_call_us(func: Callable[[], object], n: int) -> float:
    """Mean µs per call of ``func`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        func()
    return (time.perf_counter() - start) / n * 1e6


def report(rows: list[tuple[str, float, str, float, str]]) -> None:
    """Print ``name, ours, reference name, reference, unit`` rows with their ratio."""
    print(f"{'measure':44} {'ours':>12} {'reference':>28} {'ref':>12} {'ratio':>7}")
    for name, ours, ref_name, ref, unit in rows:
        print(
            f"{name:44} {ours:10.2f}{unit:>2} {ref_name:>28} {ref:10.2f}{unit:>2} {ours / ref:7.2f}"
        )


def scratch_dir(ram: bool = True) -> str:
    """A temporary folder: in RAM (``/dev/shm``, when available) so storage benchmarks measure the
    software's cost rather than the shared machine's disk and page-cache state, or with
    ``ram=False`` on the disk (the system's temporary folder), where acquisitions really write."""
    import os
    import tempfile

    return tempfile.mkdtemp(dir="/dev/shm" if ram and os.path.isdir("/dev/shm") else None)


#: The channels and z planes of :func:`tcz_frames`' workload.
CHANNELS = ("DAPI", "FITC")
Z = 2


def tcz_frames(count: int, size: int) -> tuple[list[dict], list[Any]]:
    """``count`` frames' coordinates (time x channel x z) and a pool of 8 ``size``² uint16 noise
    frames to put at them."""
    import numpy as np

    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 4000, (size, size), dtype=np.uint16) for _ in range(8)]
    per_time = len(CHANNELS) * Z
    coords = [
        {"time": i // per_time, "channel": CHANNELS[(i // Z) % len(CHANNELS)], "z": i % Z}
        for i in range(count)
    ]
    return coords, pool
