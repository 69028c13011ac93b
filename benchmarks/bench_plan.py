"""How long Run takes to start acquiring, and the memory a plan costs, as the plan grows.

Headless: ``Acquisition(multi_d_acquisition_plan(N))`` from ``start()`` to the first frame read, and
the peak memory (tracemalloc) of planning and starting, for N = 1,000 and 1,000,000 time points,
beside the list of events that ``multi_d_acquisition_events`` builds (what Run did before plans were
lazy). With a display (``xvfb-run -a python bench_plan.py --panel``), the same from the Acquisition
panel's Run.

    python bench_plan.py            # headless
    xvfb-run -a python bench_plan.py --panel
"""

from __future__ import annotations

import shutil
import sys
import time
import tracemalloc

from _common import median_of, scratch_dir
from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.data import DataHandler
from exengine.devices.simulated import create_simulated_devices
from exengine.events import multi_d_acquisition_events, multi_d_acquisition_plan
from exengine.storage import NDRAMStorage

SIZES = (1_000, 1_000_000)
RUNS = 5


def _first_frame(acquisition: Acquisition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while acquisition.frames_acquired < 1:
        if time.monotonic() > deadline:
            raise TimeoutError("no frame within 30 s")
        time.sleep(0.0005)


def start_to_first_frame(time_points: int, lazy: bool = True) -> tuple[float, float]:
    """Seconds from planning to the first frame read, and the peak MB traced meanwhile."""
    handler = DataHandler(NDRAMStorage())
    tracemalloc.start()
    started = time.perf_counter()
    if lazy:
        plan = multi_d_acquisition_plan(num_time_points=time_points, data_handler=handler)
    else:
        plan = multi_d_acquisition_events(num_time_points=time_points, data_handler=handler)
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    _first_frame(acquisition)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    acquisition.abort()
    acquisition.await_completion(timeout=30)
    return elapsed, peak


def panel_start_to_first_frame(time_points: int) -> float:
    """Seconds from the panel's Run to the first frame read (with a napari viewer shown)."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_exengine.acquisition_panel import AcquisitionPanel

    viewer = napari.Viewer(show=True)
    folder = scratch_dir()
    try:
        panel = AcquisitionPanel(viewer)
        panel.storage.directory.value = folder
        panel.multi_d.time_points.value = time_points
        QApplication.processEvents()
        started = time.perf_counter()
        acquisition = panel.run()
        _first_frame(acquisition)
        elapsed = time.perf_counter() - started
        panel.abort()
        deadline = time.monotonic() + 30
        while not panel.run_control.run_button.enabled and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.01)
        return elapsed
    finally:
        viewer.close()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    devices = create_simulated_devices()
    devices["Camera"].exposure = 0.0
    devices["Camera"].frame_rate_limit = 100000.0
    start_to_first_frame(10)  # warm-up: the simulated specimen is rendered once, on the first frame
    print(
        f"{'time points':>12} {'lazy plan: start to 1st frame':>32} {'peak MB':>8}"
        f" {'list of events: start to 1st frame':>38} {'peak MB':>8}"
    )
    for size in SIZES:
        lazy = [start_to_first_frame(size) for _ in range(RUNS)]
        listed = [
            start_to_first_frame(size, lazy=False) for _ in range(1 if size > 100_000 else RUNS)
        ]
        lazy_s = sorted(t for t, _ in lazy)[len(lazy) // 2]
        lazy_mb = max(m for _, m in lazy)
        listed_s = sorted(t for t, _ in listed)[len(listed) // 2]
        listed_mb = max(m for _, m in listed)
        print(
            f"{size:>12,} {lazy_s * 1000:29.1f} ms {lazy_mb:8.2f} {listed_s * 1000:35.1f} ms "
            f"{listed_mb:8.1f}   ({listed_s / lazy_s:,.0f}x faster, {listed_mb / lazy_mb:,.0f}x "
            "less memory)"
        )
    if "--panel" in sys.argv:
        for size in SIZES:
            seconds = median_of(3, lambda size=size: panel_start_to_first_frame(size))
            print(f"panel Run, {size:>12,} time points: {seconds * 1000:.1f} ms to the first frame")
    ExecutionEngine.get_instance().shutdown()


if __name__ == "__main__":
    main()
