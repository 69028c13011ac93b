"""How close an acquisition's duration comes to the estimate the panel and ``exengine acquire``
show (``CheckedAcquisition.duration_s``), headless, on the simulated microscope with its default
camera (10 ms a frame): representative plans, median of several runs each.

Run: ``python benchmarks/bench_estimate.py``.
"""

from __future__ import annotations

import statistics
import tempfile

from exengine import ExecutionEngine
from exengine.events import MultiDSettings
from napari_exengine.acquisition_setup import AcquisitionRequest, check_acquisition
from napari_exengine.device_sets import load_device_set

RUNS = 3
PLANS = {
    "t100": {"num_time_points": 100},
    "t20 z5": {"num_time_points": 20, "z_start": 0, "z_end": 4, "z_step": 1},
    "t10 c2 z5": {
        "num_time_points": 10,
        "channels": ["DAPI", "FITC"],
        "z_start": 0,
        "z_end": 4,
        "z_step": 1,
    },
    "t25 p4": {"num_time_points": 25, "xy_positions": [[0, 0], [100, 0], [0, 100], [100, 100]]},
    "t10 c2, 20/45 ms": {
        "num_time_points": 10,
        "channels": ["DAPI", "FITC"],
        "channel_exposures_ms": [20.0, 45.0],
    },
    "t3 every 0.5 s, c2 z5": {
        "num_time_points": 3,
        "time_interval_s": 0.5,
        "channels": ["DAPI", "FITC"],
        "z_start": 0,
        "z_end": 4,
        "z_step": 1,
    },
}


def run(devices, arguments: dict) -> tuple[float, float]:
    """The plan's estimated and actual seconds."""
    settings = MultiDSettings.from_event_arguments(channel_group=devices.channel, **arguments)
    request = AcquisitionRequest(plan=settings, devices=devices, destination=tempfile.mkdtemp())
    checked = check_acquisition(request)
    acquisition = checked.create()
    acquisition.start()
    acquisition.await_completion(timeout=120)
    return float(checked.duration_s or 0.0), acquisition.elapsed_s()


def main() -> None:
    devices = load_device_set("simulated")
    devices.camera.exposure = 10.0
    run(devices, {"num_time_points": 20})  # one-time set-ups (imports, caches) first
    print(f"{'plan':28} {'estimate':>9} {'actual':>9} {'actual/estimate':>16}")
    for name, arguments in PLANS.items():
        results = [run(devices, arguments) for _ in range(RUNS)]
        estimate = statistics.median(e for e, _ in results)
        actual = statistics.median(a for _, a in results)
        print(f"{name:28} {estimate:8.2f}s {actual:8.2f}s {actual / estimate:16.2f}")
    ExecutionEngine.get_instance().shutdown()


if __name__ == "__main__":
    main()
