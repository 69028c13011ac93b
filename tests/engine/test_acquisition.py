"""Acquisition: lazy and open-ended plans, validation before anything moves, pause/resume, prompt
stop."""

from __future__ import annotations

import itertools
import math
import threading
import time
import tracemalloc

import numpy as np
import pytest

from exengine.acquisition import Acquisition, PlanError
from exengine.data import DataHandler
from exengine.events import (
    ReadoutData,
    SetPosition1DEvent,
    SetPropertiesEvent,
    StartCapture,
    multi_d_acquisition_events,
    multi_d_acquisition_plan,
)
from exengine.kernel.data_coords import DataCoordinates
from exengine.notifications import AcquisitionPausedNotification, AcquisitionResumedNotification
from exengine.storage import NDRAMStorage, NDTiffStorage


def _describe(event):
    """The kind and settings of an event, to compare two plans."""
    attrs = {
        k: v
        for k, v in vars(event).items()
        if not k.startswith("_") and k not in ("data_handler", "clock")
    }
    if isinstance(event, ReadoutData):
        attrs["coords"] = [dict(c) for c in event.data_coordinate_iterator]
        attrs.pop("data_coordinate_iterator", None)
    return type(event).__name__, repr(sorted(attrs.items(), key=lambda kv: kv[0]))


def test_lazy_plan_gives_the_same_events_as_the_list(scope):
    kwargs = dict(
        num_time_points=3,
        time_interval_s=0.5,
        z_start=-2,
        z_end=2,
        z_step=2,
        channel_group="Channel",
        channels=["DAPI", "FITC"],
        channel_exposures_ms=[1.0, 2.0],
        xy_positions=[[0, 0], [50, 50]],
        order="tpcz",
    )
    listed = multi_d_acquisition_events(**kwargs)
    plan = multi_d_acquisition_plan(**kwargs)
    assert [_describe(e) for e in plan] == [_describe(e) for e in listed]
    assert plan.total_frames == 3 * 2 * 2 * 3
    sequenced = dict(kwargs, order="tpcz", sequence="z")
    assert [_describe(e) for e in multi_d_acquisition_plan(**sequenced)] == [
        _describe(e) for e in multi_d_acquisition_events(**sequenced)
    ]


def test_a_huge_plan_costs_nothing_until_it_runs(scope):
    tracemalloc.start()
    started = time.perf_counter()
    plan = multi_d_acquisition_plan(num_time_points=10**9, z_start=0, z_end=1e5, z_step=1e-3)
    first = [e for _, e in zip(range(50), plan, strict=False)]
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert plan.total_frames == 10**9 * (10**8 + 1)
    assert len(first) == 50 and elapsed < 1.0 and peak < 5_000_000


def test_events_are_made_just_before_they_run(scope):
    made, ran = [], []
    handler = DataHandler(NDRAMStorage())

    def plan():
        for t in range(5):
            made.append(t)
            assert len(ran) == t  # the previous frame was read before this one is planned
            yield StartCapture(num_images=1)
            yield ReadoutData([{"time": t}], data_handler=handler, num_images=1)
            ran.append(t)

    acquisition = Acquisition(plan(), handler)
    assert acquisition.is_open_ended and acquisition.time_left_s() is None
    acquisition.start()
    acquisition.await_completion(timeout=30)
    assert made == ran == list(range(5)) and len(handler.storage) == 5


def test_open_ended_time_lapse_until_stopped(scope, tmp_path):
    handler = DataHandler(NDTiffStorage(tmp_path, name="endless"))
    plan = multi_d_acquisition_plan(num_time_points=math.inf, data_handler=handler)
    assert plan.total_frames is None
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    deadline = time.monotonic() + 20
    while acquisition.frames_stored < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    acquisition.stop()
    acquisition.await_completion(timeout=30)
    stored = handler.storage
    assert acquisition.frames_acquired >= 200 and len(stored) == acquisition.frames_acquired
    assert sorted(c["time"] for c in stored.get_coordinates_list()) == list(range(len(stored)))
    assert acquisition.frames_per_s() > 0


def test_open_ended_time_must_be_outermost(scope):
    with pytest.raises(ValueError, match="outermost"):
        multi_d_acquisition_plan(num_time_points=math.inf, z_start=0, z_end=2, z_step=1, order="zt")
    with pytest.raises(ValueError, match="multi_d_acquisition_plan"):
        multi_d_acquisition_events(num_time_points=math.inf)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(channel_group="Channel", channels=["DAPI", "BOGUS"]),
            "Channel.channel = 'BOGUS' is not allowed",
        ),
        (
            dict(z_start=0, z_end=6000, z_step=1000),
            r"Z position = 6000 is outside its limits \[-5000, 5000\]",
        ),
        (
            dict(channel_group="Channel", channels=["DAPI"], channel_exposures_ms=[20000]),
            r"Camera.exposure = 20000 is outside its limits \[0, 10000\]",
        ),
    ],
)
def test_validation_refuses_bad_settings_before_anything_moves(scope, tmp_path, kwargs, message):
    handler = DataHandler(NDRAMStorage())
    for events in (
        multi_d_acquisition_events(num_time_points=2, data_handler=handler, **kwargs),
        multi_d_acquisition_plan(num_time_points=2, data_handler=handler, **kwargs),
    ):
        acquisition = Acquisition(events, handler)
        with pytest.raises(PlanError, match=message):
            acquisition.start()
        assert not acquisition.is_running()
    assert scope["Z"].get_position() == 0 and handler.frames_accepted == 0


@pytest.mark.parametrize(
    "bad",
    [
        dict(time_interval_s=math.nan),
        dict(xy_positions=[[math.nan, math.nan]]),
        dict(z_start=0, z_end=math.inf, z_step=1),
    ],
)
def test_non_finite_numbers_are_refused(scope, bad):
    with pytest.raises(ValueError, match="finite"):
        multi_d_acquisition_plan(num_time_points=2, **bad)


def test_a_lazy_event_is_checked_just_before_it_runs(scope):
    handler = DataHandler(NDRAMStorage())

    def plan():
        for t in range(3):
            yield StartCapture(num_images=1)
            yield ReadoutData([{"time": t}], data_handler=handler, num_images=1)
        yield SetPosition1DEvent("Z", 99999)

    acquisition = Acquisition(plan(), handler)
    acquisition.start()
    with pytest.raises(PlanError, match="99999 is outside"):
        acquisition.await_completion(timeout=30)
    assert len(handler.storage) == 3 and scope["Z"].get_position() == 0


def test_a_failing_plan_fails_clearly_and_keeps_its_frames(scope):
    handler = DataHandler(NDRAMStorage())

    def plan():
        for t in range(4):
            yield StartCapture(num_images=1)
            yield ReadoutData([{"time": t}], data_handler=handler, num_images=1)
        raise ZeroDivisionError("the analysis failed")

    acquisition = Acquisition(plan(), handler)
    acquisition.start()
    with pytest.raises(
        PlanError, match=r"ZeroDivisionError: the analysis failed \(after 8 events, 4 frames"
    ):
        acquisition.await_completion(timeout=30)
    assert len(handler.storage) == 4


def test_pause_holds_between_events_and_resume_goes_on(scope, engine):
    scope["Camera"].frame_rate_limit = 200.0
    handler = DataHandler(NDRAMStorage())
    notes = []
    engine.subscribe_to_notifications(notes.append)
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=60, data_handler=handler), handler
    )
    future = acquisition.start()
    deadline = time.monotonic() + 10
    while acquisition.frames_acquired < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    acquisition.pause()
    assert acquisition.is_paused
    paused = future.await_notification(AcquisitionPausedNotification, timeout=5)
    held = acquisition.frames_acquired
    assert paused.payload == held
    time.sleep(0.3)
    assert acquisition.frames_acquired == held and acquisition.is_running()
    acquisition.resume()
    assert not acquisition.is_paused
    resumed = future.await_notification(AcquisitionResumedNotification, timeout=5)
    assert resumed.payload >= 0.3
    acquisition.await_completion(timeout=30)
    assert len(handler.storage) == 60
    deadline = time.monotonic() + 5
    while (
        not any(isinstance(n, AcquisitionResumedNotification) for n in notes)
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    assert any(isinstance(n, AcquisitionPausedNotification) for n in notes)
    assert any(isinstance(n, AcquisitionResumedNotification) for n in notes)
    engine.unsubscribe_from_notifications(notes.append)


def test_intervals_count_from_the_resume(scope):
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=4, time_interval_s=0.4, data_handler=handler),
        handler,
    )
    acquisition.start()
    deadline = time.monotonic() + 10
    while acquisition.frames_acquired < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    acquisition.pause()
    # longer than the two intervals left: no burst of catch-up frames after the resume
    time.sleep(1.5)
    acquisition.resume()
    acquisition.await_completion(timeout=30)
    received = [handler.get({"time": t}, return_data=False)["ReceivedTime"] for t in range(4)]
    assert len(set(received)) == 4
    stamps = [np.datetime64(r) for r in received]
    gaps = [(b - a) / np.timedelta64(1, "ms") for a, b in itertools.pairwise(stamps[1:])]
    assert all(gap >= 300 for gap in gaps), gaps


def test_a_time_lapse_inside_positions_keeps_its_intervals_at_each_position(scope):
    """Order ptc: each position gets its own time-lapse; the second position's time points keep
    the interval (they once shared the first position's clock and ran back to back)."""
    handler = DataHandler(NDRAMStorage())
    plan = multi_d_acquisition_plan(
        num_time_points=3,
        time_interval_s=0.3,
        xy_positions=[[0, 0], [10, 10]],
        position_labels=["A", "B"],
        order="ptc",
        data_handler=handler,
    )
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    acquisition.await_completion(timeout=30)
    received = [
        np.datetime64(handler.get({"position": "B", "time": t}, return_data=False)["ReceivedTime"])
        for t in range(3)
    ]
    gaps = [(b - a) / np.timedelta64(1, "ms") for a, b in itertools.pairwise(received)]
    assert all(gap >= 250 for gap in gaps), gaps


@pytest.mark.parametrize("action", ["stop", "abort"])
def test_stop_and_abort_end_a_long_interval_promptly(scope, action):
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=3, time_interval_s=20, data_handler=handler),
        handler,
    )
    acquisition.start()
    deadline = time.monotonic() + 10
    while acquisition.frames_stored < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.1)  # now waiting for the second time point, 20 s away
    started = time.monotonic()
    getattr(acquisition, action)()
    acquisition.await_completion(timeout=10)
    assert time.monotonic() - started < 1.0
    assert len(handler.storage) == 1


@pytest.mark.parametrize("action", ["stop", "abort"])
def test_stop_and_abort_work_while_paused(scope, action):
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=math.inf, data_handler=handler), handler
    )
    acquisition.start()
    deadline = time.monotonic() + 10
    while acquisition.frames_stored < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    acquisition.pause()
    time.sleep(0.1)
    getattr(acquisition, action)()
    acquisition.await_completion(timeout=10)
    assert not acquisition.is_running() and len(handler.storage) == acquisition.frames_acquired >= 3


def test_a_failed_handler_refuses_the_plan_before_the_camera_is_armed(scope):
    class Failing(NDRAMStorage):
        def put(self, coords, data, metadata):
            raise OSError(28, "No space left on device")

    handler = DataHandler(Failing())
    with pytest.raises(Exception, match="No space"):
        handler.put(DataCoordinates(time=99), np.zeros((4, 4), np.uint16), {})
        handler.await_completion(timeout=10)
    acquisition = Acquisition(
        multi_d_acquisition_events(num_time_points=2, data_handler=handler), handler
    )
    with pytest.raises(PlanError, match=r"data handler has .*failed.*No space left"):
        acquisition.validate()


def test_prioritized_property_changes_interleave(scope, engine):
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=200, data_handler=handler), handler
    )
    acquisition.start()
    done = threading.Event()
    engine.submit(SetPropertiesEvent([("Light", "power", 0.5)]), prioritize=True)
    engine.submit(lambda: done.set(), prioritize=True)
    assert done.wait(10)
    assert acquisition.is_running() or acquisition.frames_stored == 200
    acquisition.await_completion(timeout=30)
    assert scope["Light"].power == 0.5


def test_a_pause_during_an_interval_takes_effect_at_once_and_the_wait_counts_from_the_resume(scope):
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=2, time_interval_s=1.0, data_handler=handler),
        handler,
    )
    future = acquisition.start()
    deadline = time.monotonic() + 10
    while acquisition.frames_stored < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.5)  # half-way through the interval
    acquisition.pause()
    paused_at = time.monotonic()
    future.await_notification(AcquisitionPausedNotification, timeout=5)
    assert time.monotonic() - paused_at < 0.3, "the pause waited for the interval to end"
    # longer than the interval: the second time point must not come right after the resume
    time.sleep(1.0)
    assert acquisition.frames_acquired == 1
    resumed_at = time.monotonic()
    acquisition.resume()
    acquisition.await_completion(timeout=10)
    assert 0.35 < time.monotonic() - resumed_at < 2.0  # the half interval left, from the resume
    assert len(handler.storage) == 2


def test_events_submitted_straight_to_the_engine_stop_driving_the_camera_after_storage_failed(
    scope, engine
):
    from exengine.data import DataHandlerError

    class Failing(NDRAMStorage):
        def put(self, coords, data, metadata):
            raise OSError(28, "No space left on device")

    handler = DataHandler(Failing())
    engine.submit(StartCapture(num_images=1)).await_execution(10)
    engine.submit(ReadoutData([{"time": 0}], data_handler=handler, num_images=1))
    deadline = time.monotonic() + 5
    while handler.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.submit(StartCapture(num_images=5)).await_execution(10)
    with pytest.raises(DataHandlerError, match="the data handler has failed"):
        engine.submit(
            ReadoutData([{"time": t} for t in range(1, 6)], data_handler=handler, num_images=5)
        ).await_execution(10)
    assert scope["Camera"].is_stopped()


@pytest.mark.parametrize("raised", [SystemExit(3), KeyboardInterrupt()])
def test_a_plan_raising_systemexit_or_keyboardinterrupt_fails_with_a_plan_error(scope, raised):
    """Plan code that calls ``sys.exit`` (or raises ``KeyboardInterrupt`` itself) ends the run as
    any error of the plan: a ``PlanError`` naming it, the frames before it kept."""
    handler = DataHandler(NDRAMStorage())

    def plan():
        yield from multi_d_acquisition_events(num_time_points=2, data_handler=handler)
        raise raised

    acquisition = Acquisition(plan(), handler)
    acquisition.start()
    with pytest.raises(PlanError, match=type(raised).__name__):
        acquisition.await_completion(timeout=30)
    assert acquisition.status().finish_reason.value == "failed"
    assert len(handler.storage) == 2


def test_await_completion_timing_out_only_stops_waiting(scope):
    """A timeout shorter than the run raises TimeoutError and changes nothing: the run goes on and
    stores every frame (it used to finish the handler, failing the next frame)."""
    scope["Camera"].exposure = 50.0
    handler = DataHandler(NDRAMStorage())
    acquisition = Acquisition(multi_d_acquisition_plan(num_time_points=10), handler)
    acquisition.start()
    with pytest.raises(TimeoutError):
        acquisition.await_completion(timeout=0.05)
    assert not handler.is_finished()
    acquisition.await_completion(timeout=30)
    assert acquisition.status().finish_reason.value == "done" and len(handler.storage) == 10


def test_pause_and_resume_from_several_threads_never_leave_the_run_held(scope):
    """Eight threads pausing and resuming at once, with fast thread switching: after the last
    resume the run is not held, and it ends with every frame (a run was held forever 1 time in 60,
    and concurrent resumes raised TypeError)."""
    import random
    import sys

    scope["Camera"].exposure = 0.0
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            handler = DataHandler(NDRAMStorage())
            acquisition = Acquisition(
                multi_d_acquisition_plan(num_time_points=300, time_interval_s=0.001), handler
            )
            acquisition.start()
            errors: list[BaseException] = []

            def toggle(seed: int, acquisition: Acquisition = acquisition, errors=errors) -> None:
                rng = random.Random(seed)
                try:
                    for _ in range(40):
                        acquisition.pause()
                        time.sleep(rng.random() * 0.001)
                        acquisition.resume()
                except BaseException as e:
                    errors.append(e)

            threads = [threading.Thread(target=toggle, args=(seed,)) for seed in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not errors and not any(t.is_alive() for t in threads)
            acquisition.resume()
            assert not acquisition.is_paused
            acquisition.await_completion(timeout=30)  # raises if the run stayed held
            assert len(handler.storage) == 300
    finally:
        sys.setswitchinterval(switch)
