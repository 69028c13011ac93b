"""End to end: a 1,000-frame time x channel x z acquisition (10 x 2 x 50, 512x512, zero exposure) to
disk.

Compares, in one run, the wall time per frame of:

- pymmcore-plus's MDA runner on ``UniMMCore`` with a zero-exposure pure-Python camera, writing with
  its own OME-Zarr (and OME-TIFF) writer — the reference;
- ExEngine driving the *same* ``UniMMCore`` devices (through our Micro-Manager backend) to NDTiff;
- ExEngine with its own simulated microscope to NDTiff, one frame at a time and with the z stack run
  as one hardware sequence (one arm/start per stack);
- the storage alone (DataHandler + NDTiffStorage, 1,000 distinct frames already in memory) — the
  floor.

Run: ``python benchmarks/bench_e2e.py``. Every path writes to the disk (the system's temporary
folder), where acquisitions really write, and then to RAM (``/dev/shm``); medians of several
interleaved runs. Ratios are over the faster of pymmcore-plus's two writers on the same filesystem.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
import warnings

import numpy as np
import useq

from _common import scratch_dir
from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.backends.micromanager import load_micromanager
from exengine.backends.micromanager_demo import create_demo_core
from exengine.data import DataHandler
from exengine.devices.simulated import create_simulated_devices
from exengine.events import multi_d_acquisition_events
from exengine.storage import NDTiffStorage

T, CHANNELS, Z = 10, ("DAPI", "FITC"), 50
FRAMES = T * len(CHANNELS) * Z
RUNS = 5


def pymmcore_plus_ms(core, root: str, suffix: str) -> float:
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": T},
        channels=[{"config": c, "group": "Channel"} for c in CHANNELS],
        z_plan={"range": Z - 1, "step": 1},
        axis_order="tcz",
    )
    target = os.path.join(root, f"mda{suffix}")
    start = time.perf_counter()
    core.mda.run(sequence, output=target)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target, ignore_errors=True)
    if os.path.isfile(target):
        os.remove(target)
    return elapsed / FRAMES * 1000


def exengine_ms(
    root: str, camera, channel, channel_property: str, z_device, sequence=None
) -> float:
    storage = NDTiffStorage(root, "ours")
    handler = DataHandler(storage)
    events = multi_d_acquisition_events(
        num_time_points=T,
        z_start=0,
        z_end=Z - 1,
        z_step=1,
        channel_group=channel,
        channel_property=channel_property,
        channels=list(CHANNELS),
        order="tcz",
        sequence=sequence,
        camera=camera,
        z_device=z_device,
        data_handler=handler,
    )
    start = time.perf_counter()
    acquisition = Acquisition(events, handler)
    acquisition.start()
    acquisition.await_completion()
    elapsed = time.perf_counter() - start
    assert handler.frames_stored == FRAMES, handler.frames_stored
    shutil.rmtree(storage.path)
    return elapsed / FRAMES * 1000


def storage_only_ms(root: str) -> float:
    base = np.random.default_rng(0).integers(0, 4000, (512, 512), dtype=np.uint16)
    # distinct frames, all made before the clock starts
    frames = iter([base + i for i in range(FRAMES)])
    storage = NDTiffStorage(root, "floor")
    handler = DataHandler(storage)
    start = time.perf_counter()
    for t in range(T):
        for c in CHANNELS:
            for z in range(Z):
                handler.put({"time": t, "channel": c, "z": z}, next(frames), {})
    handler.await_completion()
    elapsed = time.perf_counter() - start
    shutil.rmtree(storage.path)
    return elapsed / FRAMES * 1000


PATHS = [
    ("mda_zarr", "pymmcore-plus MDA, UniMMCore demo camera -> OME-Zarr"),
    ("mda_tiff", "pymmcore-plus MDA, UniMMCore demo camera -> OME-TIFF"),
    ("ours_mm", "ExEngine, same UniMMCore devices -> NDTiff"),
    ("ours_sim", "ExEngine, simulated microscope -> NDTiff"),
    ("ours_seq", "ExEngine, simulated, z as hardware sequence -> NDTiff"),
    ("floor", "storage only (DataHandler + NDTiff, frames in memory)"),
]


def measure(root: str, core, mm, sim) -> dict[str, float]:
    """Median ms/frame of every path, writing under ``root``; the paths are interleaved run by
    run."""
    runs: dict[str, list[float]] = {key: [] for key, _ in PATHS}
    for _ in range(RUNS):
        runs["mda_zarr"].append(pymmcore_plus_ms(core, root, ".ome.zarr"))
        runs["mda_tiff"].append(pymmcore_plus_ms(core, root, ".ome.tiff"))
        runs["ours_mm"].append(
            exengine_ms(root, mm["mm_Camera"], mm["mm_Channel"], "config", mm["mm_Focus"])
        )
        runs["ours_sim"].append(
            exengine_ms(root, sim["Camera"], sim["Channel"], "channel", sim["Z"])
        )
        runs["ours_seq"].append(
            exengine_ms(root, sim["Camera"], sim["Channel"], "channel", sim["Z"], "z")
        )
        runs["floor"].append(storage_only_ms(root))
    return {key: statistics.median(values) for key, values in runs.items()}


def main() -> None:
    warnings.simplefilter("ignore")
    logging.getLogger("pymmcore-plus").setLevel(logging.CRITICAL)
    core = create_demo_core()
    core.setExposure(0)
    mm = load_micromanager(core=core, prefix="mm_")
    sim = create_simulated_devices()
    sim["Camera"].exposure = 0.0
    sim["Camera"].frame_rate_limit = 100000.0
    results = {}
    try:
        for where, ram in (("disk", False), ("RAM", True)):
            root = scratch_dir(ram=ram)
            try:
                results[where] = measure(root, core, mm, sim)
            finally:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        ExecutionEngine.get_instance().shutdown()
    print(
        f"{'path (1,000 frames t10 x c2 x z50, 512x512), ms/frame':58} "
        + " ".join(f"{where:>8} {'ratio':>6}" for where in results)
    )
    for key, label in PATHS:
        cells = []
        for med in results.values():
            # the faster of pymmcore-plus's writers
            reference = min(med["mda_zarr"], med["mda_tiff"])
            cells.append(f"{med[key]:8.3f} {med[key] / reference:6.2f}")
        print(f"{label:58} " + " ".join(cells))
    print(
        "ratio: ms/frame over the faster pymmcore-plus writer on the same filesystem (target <= "
        "0.5)"
    )


if __name__ == "__main__":
    main()
