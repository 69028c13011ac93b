"""Acquisition throughput with the napari layer sink on a visible viewer vs without any viewer.

1,000 frames of 512x512 uint16 from the simulated camera at full speed (zero exposure) to NDTiff in
RAM, same run: the throughput ratio, the display refresh rate during the run, and the median delay from
a frame stored to it being shown. Needs a display: ``xvfb-run -a python benchmarks/bench_napari.py``.
"""

from __future__ import annotations

import shutil
import statistics
import threading
import time

import napari
from qtpy.QtWidgets import QApplication

from _common import scratch_dir
from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.data import DataHandler
from exengine.devices.simulated import create_simulated_devices
from exengine.events import multi_d_acquisition_events
from exengine.storage import NDTiffStorage
from napari_exengine.layer_sink import LayerSink

FRAMES = 1000
RUNS = 5


class TimedSink(LayerSink):
    """A LayerSink that records when each frame was stored and when a refresh showed it."""

    def __init__(self, *args, **kwargs) -> None:
        self.stored_at: dict = {}
        self.shown_at: dict = {}
        self.refresh_times: list[float] = []
        super().__init__(*args, **kwargs)
        self.handler.add_listener(self._stamp)

    def _stamp(self, stage, coords) -> None:
        if stage == "stored":
            self.stored_at[frozenset(coords.items())] = time.monotonic()

    def refresh(self) -> None:
        with self._pending_lock:
            pending = list(self._pending)
        super().refresh()
        if pending:
            now = time.monotonic()
            self.refresh_times.append(now)
            for coords in pending:
                self.shown_at[frozenset(coords.items())] = now


def run(root: str, viewer=None, pixel_size: float = 1.0) -> tuple[float, float, float]:
    storage = NDTiffStorage(root, "napari")
    handler = DataHandler(storage)
    events = multi_d_acquisition_events(num_time_points=FRAMES // 20, z_start=0, z_end=9, z_step=1,
                                        channel_group="Channel", channels=["DAPI", "FITC"], data_handler=handler)
    planned = [c for e in events if hasattr(e, "data_coordinate_iterator") for c in e.data_coordinate_iterator]
    # As the acquisition panel does: the planned coordinates and the camera's frame shape and pixel size,
    # so the layers exist, at their final scale, before the first frame.
    sink = (TimedSink(viewer, handler, name="bench", scale={}, expected=planned, frame_shape=(512, 512),
                      pixel_size=pixel_size)
            if viewer is not None else None)
    acquisition = Acquisition(events, handler)
    finished_at: list[float] = []
    handler.add_listener(lambda stage, _: finished_at.append(time.perf_counter()) if stage == "finished" else None)
    app = QApplication.instance()
    start = time.perf_counter()
    acquisition.start()
    # The acquisition ends by itself (as the panel's does); the GUI thread only processes its events.
    finisher = threading.Thread(target=acquisition.await_completion, args=(60,))
    finisher.start()
    while not handler.is_finished():
        app.processEvents()
        time.sleep(0.002)
    finisher.join()
    elapsed = finished_at[0] - start
    rate = delay = 0.0
    if sink is not None:
        sink.close()
        app.processEvents()
        rate = len(sink.refresh_times) / elapsed
        delays = [sink.shown_at[k] - sink.stored_at[k] for k in sink.shown_at if k in sink.stored_at]
        delay = statistics.median(delays) * 1000
        viewer.layers.clear()
    shutil.rmtree(storage.path)
    return FRAMES / elapsed, rate, delay


def main() -> None:
    devices = create_simulated_devices()
    devices["Camera"].exposure = 0.0
    devices["Camera"].frame_rate_limit = 100000.0
    viewer = napari.Viewer(show=True)
    root = scratch_dir()
    without, with_viewer, rates, delays = [], [], [], []
    try:
        for _ in range(RUNS):
            without.append(run(root)[0])
            fps, rate, delay = run(root, viewer, devices["Camera"].pixel_size_um)
            with_viewer.append(fps)
            rates.append(rate)
            delays.append(delay)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        viewer.close()
        ExecutionEngine.get_instance().shutdown()
    ours, ref = statistics.median(with_viewer), statistics.median(without)
    print(f"{'measure':52} {'value':>10}")
    print(f"{'frames/s with the layer sink on a visible viewer':52} {ours:10.1f}")
    print(f"{'frames/s without any viewer':52} {ref:10.1f}")
    print(f"{'throughput ratio (target >= 0.95)':52} {ours / ref:10.2f}")
    print(f"{'display refreshes per second during the run':52} {statistics.median(rates):10.1f}")
    print(f"{'median delay stored -> shown, ms (target <= 100)':52} {statistics.median(delays):10.1f}")


if __name__ == "__main__":
    main()
