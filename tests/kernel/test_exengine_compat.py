"""Scripts written for ExEngine 0.4 run unchanged: its signatures, import paths and behaviours."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pydantic
import pytest

from exengine.kernel.data_coords import DataCoordinates
from exengine.kernel.data_handler import DataHandler
from exengine.kernel.data_storage_base import DataStorage
from exengine.kernel.ex_event_base import ExecutorEvent
from exengine.kernel.ex_future import ExecutionFuture
from exengine.kernel.executor import ExecutionEngine
from exengine.kernel.notification_base import Notification, NotificationCategory


def test_coordinate_dict_keyword_and_attribute():
    coords = DataCoordinates(coordinate_dict={"time": 1, "channel": "DAPI"})
    assert coords == {"time": 1, "channel": "DAPI"} and coords.time == 1
    assert DataCoordinates(time=1).coordinate_dict == {"time": 1}
    assert DataCoordinates({"z": 2}).coordinate_dict == {"z": 2}
    live = coords.coordinate_dict
    live["z"] = 4
    assert coords.z == 4
    coords.coordinate_dict = {"time": 7}
    assert dict(coords) == {"time": 7}


def test_coordinate_dict_with_axis_keywords_is_an_error():
    with pytest.raises(ValueError, match="not both"):
        DataCoordinates(coordinate_dict={"time": 1}, z=3)


@pytest.mark.parametrize("value", [1.5, True, None, [1, 2], np.float32(0.25)])
def test_validation_errors_are_pydantic_validation_errors_naming_the_axis(value):
    with pytest.raises(pydantic.ValidationError, match="Axis 'time'") as construct:
        DataCoordinates(time=value)
    assert isinstance(construct.value, ValueError)
    coords = DataCoordinates()
    with pytest.raises(pydantic.ValidationError, match="Axis 'time'"):
        coords.time = value
    with pytest.raises(pydantic.ValidationError, match="Axis 'time'"):
        DataCoordinates(coordinate_dict={"time": value})
    assert coords == {}


def test_bad_axis_names_are_validation_errors():
    with pytest.raises(pydantic.ValidationError, match="identifiers"):
        DataCoordinates({"1bad": 1})


class DictStorage(DataStorage):
    """A storage written to ExEngine's interface only: no get_coordinates_list."""

    def __init__(self):
        self.frames = {}

    def __contains__(self, data_coordinates):
        return DataCoordinates(data_coordinates) in self.frames

    def get_data(self, data_coordinates):
        return self.frames[DataCoordinates(data_coordinates)][0]

    def get_metadata(self, data_coordinates):
        return self.frames[DataCoordinates(data_coordinates)][1]

    def put(self, data_coordinates, data, metadata):
        self.frames[DataCoordinates(data_coordinates)] = (data, metadata)

    def finish(self):
        pass

    def close(self):
        pass


def test_storage_written_to_exengines_interface_works():
    storage = DictStorage()
    handler = DataHandler(storage=storage)
    handler.put(DataCoordinates(time=0), np.ones((4, 4), np.uint16), {"a": 1})
    handler.await_completion(timeout=10)
    assert {"time": 0} in storage and storage[{"time": 0}].sum() == 16
    with pytest.raises(TypeError, match="get_coordinates_list"):
        len(storage)


def test_both_ndtiff_and_ndram_module_paths(tmp_path):
    from exengine.storage import NDRAMStorage as Ram
    from exengine.storage import NDTiffStorage as Tiff
    from exengine.storage_backends.ndtiff_and_ndram import NDRAMStorage, NDTiffStorage
    from exengine.storage_backends.ndtiff_and_ndram.NDTiffandRAM import NDRAMStorage as Ram2
    from exengine.storage_backends.ndtiff_and_ndram.NDTiffandRAM import NDTiffStorage as Tiff2

    assert NDRAMStorage is Ram is Ram2 and NDTiffStorage is Tiff is Tiff2
    storage = NDTiffStorage(directory=str(tmp_path))
    storage.put(
        DataCoordinates(time=1, channel="DAPI", z=0),
        np.array([[1, 2], [3, 4]], np.uint16),
        {"exposure": 100},
    )
    assert storage.get_metadata(DataCoordinates(time=1, channel="DAPI", z=0))["exposure"] == 100
    storage.finish()
    storage.close()


class Noop(ExecutorEvent):
    def execute(self):
        return "done"


def test_execution_future_takes_the_event_alone(engine):
    event = Noop()
    future = ExecutionFuture(event)
    assert future.event is event and future._engine is ExecutionEngine.get_instance()
    assert not future.is_execution_complete()
    assert ExecutionFuture(Noop(), engine)._engine is engine


def test_get_processed_before_the_processor_is_done_is_none():
    from exengine.storage_backends.ndtiff_and_ndram import NDRAMStorage

    release = threading.Event()

    def slow(coords, data, metadata):
        assert release.wait(10)
        return coords, data + 1, metadata

    handler = DataHandler(NDRAMStorage(), process_fn=slow)
    coords = DataCoordinates(time=0)
    handler.put(coords, np.zeros((4, 4), np.uint16), {})
    try:
        assert handler.get(coords, processed=True) is None
        raw, _ = handler.get(coords, processed=False)
        assert raw.max() == 0
        with pytest.raises(KeyError, match="time"):
            handler.get(DataCoordinates(time=99), processed=True)
    finally:
        release.set()
    handler.await_completion(timeout=10)
    data, _ = handler.get(coords, processed=True)
    assert data.max() == 1


class Undeclared(Notification):
    category = NotificationCategory.Event
    description = "not declared by the event"


class Declared(Notification):
    category = NotificationCategory.Event
    description = "declared by the event"


class Publishing(ExecutorEvent):
    notification_types = [Declared]

    def execute(self):
        self.publish_notification(Declared())
        self.publish_notification(Undeclared())
        self.publish_notification(Undeclared())


def test_undeclared_notification_warns_once_per_event_class_and_type(engine):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        future = engine.submit(Publishing())
        future.await_execution(timeout=10)
        engine.submit(Publishing()).await_execution(timeout=10)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert (
        len(messages) == 1 and "Undeclared" in messages[0] and "notification_types" in messages[0]
    )
    assert isinstance(future.await_notification(Undeclared, timeout=5), Undeclared)


def test_executor_module_names():
    from exengine.kernel import executor

    assert executor._MAIN_THREAD_NAME == "MainExecutorThread"
    assert executor._ANONYMOUS_THREAD_NAME == "AnonymousExecutorThread"


def test_a_script_in_exengine_04_style_runs_unchanged(tmp_path):
    """Devices, events, DataHandler, storage from the ndtiff_and_ndram path, futures and
    notifications, written as ExEngine 0.4's documentation writes them."""
    from exengine.devices.simulated import SimulatedCamera, SimulatedZStage
    from exengine.events.detector_events import ReadoutData, StartCapture
    from exengine.events.multi_d_events import multi_d_acquisition_events
    from exengine.kernel.data_handler import DataHandler
    from exengine.kernel.notification_base import DataStoredNotification
    from exengine.storage_backends.ndtiff_and_ndram import NDRAMStorage, NDTiffStorage

    executor = ExecutionEngine()
    camera = SimulatedCamera("Camera")
    z_stage = SimulatedZStage("Z")
    camera.exposure = 1.0

    stored = []

    def notification_handler(notification):
        if isinstance(notification, DataStoredNotification):
            stored.append(notification.payload)

    executor.subscribe_to_notifications(notification_handler, DataStoredNotification)

    num_images = 10
    data_handler = DataHandler(storage=NDRAMStorage())
    start_capture_event = StartCapture(num_images=num_images, detector=camera)
    readout_images_event = ReadoutData(
        num_images=num_images,
        detector=camera,
        data_coordinates_iterator=[DataCoordinates(time=t) for t in range(num_images)],
        data_handler=data_handler,
    )
    _ = executor.submit(start_capture_event)
    future = executor.submit(readout_images_event)
    future.await_execution(timeout=30)
    data, metadata = future.await_data(
        DataCoordinates(time=3), return_data=True, return_metadata=True, timeout=30
    )
    assert data.shape == (512, 512) and metadata["Camera"] == "Camera"
    data_handler.finish()
    data_handler.await_completion(timeout=30)

    data_handler = DataHandler(storage=NDTiffStorage(directory=str(tmp_path)))
    events = multi_d_acquisition_events(
        z_start=0, z_end=10, z_step=2, data_handler=data_handler, camera=camera, z_device=z_stage
    )
    futures = executor.submit(events)
    futures[-1].await_execution(timeout=30)
    data_handler.finish()
    data_handler.await_completion(timeout=30)
    assert len(data_handler.storage) == 6
    assert z_stage.get_position() == 10

    deadline = threading.Event()
    for _ in range(100):
        if len(stored) >= num_images + 6:
            break
        deadline.wait(0.05)
    assert sorted(c["time"] for c in stored if "time" in c) == list(range(num_images))
    executor.unsubscribe_from_notifications(notification_handler)
