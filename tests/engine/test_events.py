"""Standard events and multi-dimensional acquisitions on the simulated microscope."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.base_classes import Abortable, DataProducing, ExecutorEvent, Stoppable
from exengine.data import DataHandler
from exengine.events import (
    ReadoutData,
    SetPosition1DEvent,
    SetPosition2DEvent,
    SetPropertiesEvent,
    SetTimeEvent,
    Sleep,
    StartCapture,
    StartContinuousCapture,
    StopCapture,
    multi_d_acquisition_events,
)
from exengine.events.multi_d_settings import SettingError
from exengine.storage import NDRAMStorage


def test_capabilities_in_either_base_order(engine):
    class Before(Stoppable, Abortable, DataProducing, ExecutorEvent):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def execute(self):
            return self.data_coordinate_iterator.is_finite()

    class After(ExecutorEvent, DataProducing, Stoppable):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

        def execute(self):
            return self.data_handler

    handler = DataHandler(NDRAMStorage())
    assert engine.submit(Before(data_coordinates_iterator=[{"t": 0}])).await_execution(5) is True
    assert engine.submit(After(data_handler=handler)).await_execution(5) is handler


def test_dataclass_events_submit(engine):
    @dataclass
    class Custom(ExecutorEvent):
        value: int

        def execute(self):
            return self.value * 2

    assert engine.submit(Custom(4)).await_execution(5) == 8
    assert engine.submit(Sleep(time_s=0.01)).await_execution(5) is None


def test_set_time_event_waits_for_its_start(engine):
    started = time.monotonic()
    futures = engine.submit([SetTimeEvent(0, 0.0), SetTimeEvent(1, 0.3)])
    futures[1].await_execution(5)
    assert time.monotonic() - started >= 0.28


def test_devices_by_object_name_or_inferred(engine, scope):
    engine.submit(SetPosition1DEvent("Z", 3.0)).await_execution(5)
    engine.submit(SetPosition2DEvent(None, (10, 20))).await_execution(5)
    settings = [("Channel", "channel", "FITC"), (scope["Light"], "power", 0.5)]
    engine.submit(SetPropertiesEvent(settings)).await_execution(5)
    assert scope["Z"].get_position() == 3.0
    assert scope["XY"].get_position() == (10.0, 20.0)
    assert scope["Channel"].channel == "FITC" and scope["Light"].power == 0.5
    with pytest.raises(ValueError, match="No device named"):
        engine.submit(SetPosition1DEvent("Nope", 1.0)).await_execution(5)


def test_readout_with_documented_num_images(engine, scope):
    engine.submit(StartCapture(detector=scope["Camera"], num_images=2))
    future = engine.submit(ReadoutData(detector=scope["Camera"], num_images=2))
    assert future.await_execution(5) == 2
    frames = future.await_data([{"image": 0}, {"image": 1}], return_data=True, timeout=5)
    assert [f.shape for f in frames] == [(512, 512), (512, 512)]


def test_continuous_capture_stops(engine, scope):
    handler = DataHandler(NDRAMStorage())
    engine.submit(StartContinuousCapture(detector="Camera"))
    readout = engine.submit(
        ReadoutData(detector="Camera", data_handler=handler), thread_name="Readout"
    )
    readout.await_data(None, timeout=5)
    readout.stop(await_completion=True)
    engine.submit(StopCapture(detector="Camera")).await_execution(5)
    handler.await_completion(5)
    assert len(handler.storage) >= 1


def test_multi_d_tczp_with_channels_and_positions(engine, scope):
    handler = DataHandler(NDRAMStorage())
    events = multi_d_acquisition_events(
        num_time_points=2,
        z_start=-2,
        z_end=2,
        z_step=2,
        channel_group="Channel",
        channels=["DAPI", "FITC"],
        channel_exposures_ms=[0.5, 1.0],
        xy_positions=[(0, 0), (100, 50)],
        position_labels=["A1", "B2"],
        data_handler=handler,
    )
    engine.submit(events)[-1].await_execution(20)
    handler.await_completion(10)
    coords = handler.storage.get_coordinates_list()
    assert len(coords) == 2 * 2 * 2 * 3
    assert coords[0] == {"time": 0, "position": "A1", "channel": "DAPI", "z": 0}
    assert {c["position"] for c in coords} == {"A1", "B2"}
    metadata = handler.storage.get_metadata(
        {"time": 1, "position": "B2", "channel": "FITC", "z": 2}
    )
    assert (
        metadata["StageZ-um"] == 2.0
        and metadata["Channel"] == "FITC"
        and metadata["StageX-um"] == 100.0
    )
    assert metadata["Exposure-ms"] == 1.0


def test_multi_d_order_and_relative_z(engine, scope):
    handler = DataHandler(NDRAMStorage())
    events = multi_d_acquisition_events(
        z_start=-1,
        z_end=1,
        z_step=1,
        xyz_positions=[(0, 0, 10), (5, 5, 20)],
        order="zp",
        data_handler=handler,
    )
    Acquisition(events, handler).start().await_execution(20)
    handler.await_completion(10)
    coords = handler.storage.get_coordinates_list()
    assert coords[:2] == [{"z": 0, "position": 0}, {"z": 0, "position": 1}]
    assert handler.storage.get_metadata({"z": 2, "position": 1})["StageZ-um"] == 21.0


def test_hardware_sequence_over_z(engine, scope):
    handler = DataHandler(NDRAMStorage())
    events = multi_d_acquisition_events(
        num_time_points=2, z_start=0, z_end=4, z_step=1, sequence="z", data_handler=handler
    )
    readouts = [e for e in events if isinstance(e, ReadoutData)]
    assert len(readouts) == 2 and readouts[0].num_images == 5
    engine.submit(events)[-1].await_execution(20)
    handler.await_completion(10)
    assert [handler.storage.get_metadata({"time": 0, "z": z})["StageZ-um"] for z in range(5)] == [
        0,
        1,
        2,
        3,
        4,
    ]


@pytest.mark.parametrize(
    "kwargs, setting, words",
    [
        ({"z_start": 0, "z_end": 5}, "z_step", "A z range needs a start, an end and a step (µm)"),
        (
            {"z_start": 4, "z_end": -4, "z_step": 2},
            "z_step",
            "The z step of 2 µm does not lead from 4 µm to -4 µm; a step of -2 µm does",
        ),
        ({"z_start": 0, "z_end": math.inf, "z_step": 1}, "z_end", "The z end must be a finite"),
        ({"channels": ["DAPI"]}, "channel_group", "Channels need the device"),
        (
            {"xy_positions": [(0, 0)], "xyz_positions": [(0, 0, 0)]},
            "xyz_positions",
            "Give xy positions or xyz positions, not both",
        ),
        (
            {"xy_positions": [(0, 0)], "position_labels": ["a", "b"]},
            "position_labels",
            "2 position labels for 1 position: give one per position",
        ),
        (
            {"num_time_points": 2, "time_interval_s": [1.0]},
            "time_interval_s",
            "1 time interval for 2 time points",
        ),
        ({"time_interval_s": 2}, "time_interval_s", "A time interval (2 s) needs a number"),
        ({"num_time_points": -1}, "num_time_points", "The number of time points must be"),
        (
            {
                "num_time_points": 2,
                "z_start": 0,
                "z_end": 2,
                "z_step": 1,
                "order": "tz",
                "sequence": "t",
            },
            "sequence",
            "The hardware-triggered axes 't' must be the innermost ones of the axis order 'tz'",
        ),
        ({"num_time_points": 2, "order": "xyz"}, "order", "The axis order lists each of"),
        (
            {"channel_group": "Channel", "channels": ["DAPI"], "channel_exposures_ms": [1, 2]},
            "channel_exposures_ms",
            "2 exposures for 1 channel: give one per channel",
        ),
        (
            {"channel_group": "Channel", "channels": ["DAPI"], "channel_exposures_ms": [0]},
            "channel_exposures_ms",
            "The exposure of channel 'DAPI' must be above 0 ms, got 0 ms",
        ),
    ],
)
def test_multi_d_invalid_arguments_say_why_in_words_and_name_the_setting(kwargs, setting, words):
    with pytest.raises(SettingError) as info:
        multi_d_acquisition_events(**kwargs)
    assert info.value.setting == setting and words in str(info.value)
    assert "_" not in str(info.value), "code names"


@pytest.mark.parametrize("enabled", [True, False])
def test_building_events_leaves_the_garbage_collector_as_it_was(engine, scope, enabled):
    """Events are built with the cyclic collector paused (it took half of a long time-lapse's
    planning); whatever happens, it is left as the caller had it."""
    import gc

    (gc.enable if enabled else gc.disable)()
    try:
        assert len(multi_d_acquisition_events(num_time_points=3, camera=scope["Camera"])) == 9
        assert gc.isenabled() == enabled
        with pytest.raises(ValueError, match="z end"):
            multi_d_acquisition_events(z_start=1)
        assert gc.isenabled() == enabled
    finally:
        gc.enable()


def start_time_lapse(
    scope, time_points: int, wait_for_frames: int
) -> tuple[Acquisition, DataHandler]:
    """Start a 20 ms-exposure time-lapse into memory and wait (up to 10 s) until some frames are
    stored."""
    scope["Camera"].exposure = 20.0
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        multi_d_acquisition_events(num_time_points=time_points, data_handler=handler), handler
    )
    acquisition.start()
    deadline = time.monotonic() + 10
    while acquisition.frames_stored < wait_for_frames and time.monotonic() < deadline:
        time.sleep(0.01)
    return acquisition, handler


def test_acquisition_stop_and_abort_keep_acquired_frames(engine, scope):
    for action in ("stop", "abort"):
        acquisition, handler = start_time_lapse(scope, 200, wait_for_frames=3)
        getattr(acquisition, action)()
        acquisition.await_completion(10)
        stored = len(handler.storage)
        assert 3 <= stored < 200
        assert handler.frames_accepted == stored
    assert ExecutionEngine.get_instance().submit(lambda: 1).await_execution(5) == 1


def test_prioritized_calls_interleave_with_a_running_acquisition(engine, scope):
    acquisition, _ = start_time_lapse(scope, 100, wait_for_frames=2)
    started = time.monotonic()
    engine.submit(lambda: setattr(scope["Light"], "power", 0.25), prioritize=True).await_execution(
        5
    )
    assert time.monotonic() - started < 1.0, "the prioritized call waited for the whole acquisition"
    assert acquisition.is_running()
    acquisition.abort()
    acquisition.await_completion(10)
    assert scope["Light"].power == 0.25
