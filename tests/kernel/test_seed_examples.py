"""Every example of the user's data.rst, as written, with real storage and a real data-producing
event."""

from __future__ import annotations

import itertools

import numpy as np

from exengine import ExecutionEngine
from exengine.data import DataCoordinates, DataCoordinatesIterator, DataHandler, DataProcessor
from exengine.devices.simulated import create_simulated_devices
from exengine.events import ReadoutData, StartCapture
from exengine.storage import NDRAMStorage, NDTiffStorage
from seed_processors import batch_process, multi_output_process, process_function


def test_data_coordinates_example(capsys):
    coords = DataCoordinates(time=3, channel="DAPI", z=5)
    print(coords.time)
    print(coords["channel"])
    coords.position = 2
    coord_dict = dict(coords)
    print(coord_dict)
    assert capsys.readouterr().out.splitlines() == [
        "3",
        "DAPI",
        "{'time': 3, 'channel': 'DAPI', 'z': 5, 'position': 2}",
    ]


def test_iterator_example():
    finite_iter = DataCoordinatesIterator.create(
        [
            {"time": 0, "channel": "DAPI"},
            {"time": 1, "channel": "DAPI"},
            {"time": 2, "channel": "DAPI"},
        ]
    )

    def infinite_coords():
        for i in itertools.count():
            yield {"time": i}

    infinite_iter = DataCoordinatesIterator.create(infinite_coords())
    assert finite_iter.is_finite() and not infinite_iter.is_finite()
    assert len(list(finite_iter)) == 3


def test_data_handler_example(tmp_path):
    create_simulated_devices()
    camera = ExecutionEngine.get_device("Camera")
    camera.exposure = 1.0
    engine = ExecutionEngine.get_instance()
    coords = DataCoordinates(time=0, channel="DAPI")

    storage = NDTiffStorage(tmp_path)
    data_handler = DataHandler(storage)
    engine.submit(StartCapture(num_images=1, detector=camera))
    data_producing_event = ReadoutData(
        data_coordinates_iterator=[coords], detector=camera, num_images=1, data_handler=data_handler
    )
    future = engine.submit(data_producing_event)
    future.await_data(coords, timeout=10)
    data, metadata = data_handler.get(coords, return_data=True, return_metadata=True)
    assert data.shape == (512, 512) and metadata["Channel"] == "DAPI"
    data_handler.await_completion(10)
    np.testing.assert_array_equal(storage.get_data(coords), data)


def run_through(process, frames=12):
    storage = NDRAMStorage()
    processor = DataProcessor(process)
    data_handler = DataHandler(storage, process_fn=processor)
    for t in range(frames):
        data_handler.put({"time": t}, np.full((128, 128), 7, np.uint16), {"t": t})
    data_handler.await_completion(10)
    return storage


def test_processor_examples():
    storage = run_through(process_function)
    assert storage.get_data({"time": 0})[:100, :100].max() == 0
    assert storage.get_data({"time": 0})[100:, 100:].min() == 7
    assert storage.get_metadata({"time": 3})["new_key"] == "new_value"
    assert len(run_through(batch_process)) == 12


def test_multi_output_example_as_written_adds_the_channel_its_metadata_names(tmp_path):
    create_simulated_devices()
    camera = ExecutionEngine.get_device("Camera")
    camera.exposure = 1.0
    engine = ExecutionEngine.get_instance()
    storage = NDTiffStorage(tmp_path)
    data_handler = DataHandler(storage, process_fn=DataProcessor(multi_output_process))
    coords = [DataCoordinates(time=t, channel="DAPI") for t in range(3)]
    engine.submit(StartCapture(num_images=3, detector=camera))
    future = engine.submit(
        ReadoutData(
            data_coordinates_iterator=coords,
            detector=camera,
            num_images=3,
            data_handler=data_handler,
        )
    )
    future.await_execution(timeout=10)
    data_handler.await_completion(10)
    assert len(storage) == 6
    for t in range(3):
        raw, derived = {"time": t, "channel": "DAPI"}, {"time": t, "channel": "New_Channel"}
        np.testing.assert_array_equal(storage.get_data(derived), storage.get_data(raw))
        assert storage.get_metadata(raw)["Channel"] == "DAPI"
        assert storage.get_metadata(derived)["Channel"] == "New_Channel"
