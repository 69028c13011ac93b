"""npe2 sample data: a short simulated time/channel/z acquisition run through the real engine."""

from __future__ import annotations

from typing import Any

import numpy as np

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.channel_colors import channel_colormap
from exengine.data import DataHandler
from exengine.devices.simulated import create_simulated_devices
from exengine.events import multi_d_acquisition_events
from exengine.storage import NDRAMStorage

CHANNELS = ("DAPI", "FITC")


def simulated_acquisition(
    time_points: int = 3, z_planes: int = 5, size: int = 256
) -> list[tuple[Any, dict, str]]:
    """Acquire ``time_points`` x 2 channels x ``z_planes`` frames of ``size``² on a private
    simulated microscope and return them as one layer per channel."""
    devices = create_simulated_devices(prefix="Sample")
    try:
        camera = devices["SampleCamera"]
        camera.exposure = 0.0
        camera.frame_rate_limit = 1000.0
        camera.roi = (0, 0, size, size)
        handler = DataHandler(NDRAMStorage(summary_metadata={"Software": "napari-exengine sample"}))
        z_step = 4.0
        events = multi_d_acquisition_events(
            num_time_points=time_points,
            z_start=-z_step * (z_planes // 2),
            z_end=z_step * (z_planes // 2),
            z_step=z_step,
            channel_group=devices["SampleChannel"],
            channels=list(CHANNELS),
            camera=camera,
            z_device=devices["SampleZ"],
            xy_device=devices["SampleXY"],
            data_handler=handler,
            order="tcz",
        )
        acquisition = Acquisition(events, handler)
        acquisition.start()
        acquisition.await_completion(timeout=120)
        storage = handler.storage
        layers = []
        for index, channel in enumerate(CHANNELS):
            stack = np.stack(
                [
                    np.stack(
                        [
                            storage.get_data({"time": t, "channel": channel, "z": z})
                            for z in range(z_planes)
                        ]
                    )
                    for t in range(time_points)
                ]
            )
            layers.append(
                (
                    stack,
                    {
                        "name": f"simulated {channel}",
                        "colormap": channel_colormap(channel, index),
                        "blending": "additive",
                        "axis_labels": ["time", "z", "y", "x"],
                        "scale": [1.0, z_step, 0.65, 0.65],
                    },
                    "image",
                )
            )
        return layers
    finally:
        for name in devices:
            ExecutionEngine.unregister_device(name)
