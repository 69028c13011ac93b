"""Every kind of OME-Zarr dataset the project writes is valid OME-NGFF 0.5 for two independent
validators, ome-zarr-models and yaozarrs (their warnings, the spec's SHOULDs, fail too): time,
channel and z stacks, positions, grid scans, processor outputs, open-ended runs once finished, and
datasets in an object store; and ome-zarr-py opens their images with the right shape, scale and
channel names. Written by the real engine on the simulated microscope, from the command line or as a
plan run by ``Acquisition``; no mocks."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from exengine.acquisition import Acquisition
from exengine.data import DataHandler
from exengine.events import multi_d_acquisition_plan
from exengine.storage import OMEZarrStorage
from exengine.storage.omezarr_reader import OMEZarrDataset
from exengine.storage.omezarr_store import open_store
from omezarr_helpers import FRAME, acquire, validate


def multiscale(image: zarr.Group) -> dict:
    return image.attrs["ome"]["multiscales"][0]


def scale(image: zarr.Group) -> list[float]:
    return multiscale(image)["datasets"][0]["coordinateTransformations"][0]["scale"]


def assert_reads_back(path: str | Path, images: dict[str, zarr.Group], frames: int) -> None:
    """Our reader finds every frame, each as the image's array holds it."""
    dataset = OMEZarrDataset(path)
    coordinates = dataset.coordinates()
    assert len(coordinates) == frames
    for coords in coordinates[:: max(1, frames // 6)] + coordinates[-1:]:
        image = images[dataset._images[tuple(coords[a] for a in dataset.image_axes)]]
        index = dataset.position(coords)[len(dataset.image_axes) :]
        np.testing.assert_array_equal(dataset.read_frame(coords), image["0"][index])


def test_a_time_channel_z_stack_has_units_scales_colours_and_windows(tmp_path):
    path = acquire(
        tmp_path, "tcz", "--time", "2", "--interval", "0.1", "--channels", "DAPI,FITC", "--z",
        "0:2:2",
    )  # fmt: skip
    images = validate(zarr.open_group(path, mode="r"))
    root = images[""]
    array = root["0"]
    assert array.shape == (2, 2, 2, *FRAME)
    assert array.metadata.dimension_names == ("time", "channel", "z", "y", "x")
    axes = multiscale(root)["axes"]
    assert [(a["name"], a["type"], a.get("unit")) for a in axes] == [
        ("time", "time", "second"),
        ("channel", "channel", None),
        ("z", "space", "micrometer"),
        ("y", "space", "micrometer"),
        ("x", "space", "micrometer"),
    ]
    # the interval, the z step and the camera's pixel size
    assert scale(root) == [0.1, 1.0, 2.0, 0.65, 0.65]
    channels = root.attrs["ome"]["omero"]["channels"]
    assert [(c["label"], c["color"]) for c in channels] == [("DAPI", "0000FF"), ("FITC", "00FF00")]
    for channel in channels:
        window = channel["window"]
        assert window["min"] == 0 and window["max"] == 65535
        assert window["min"] <= window["start"] < window["end"] <= window["max"]
    assert_reads_back(path, images, 8)


def test_positions_are_the_images_of_one_collection(tmp_path):
    path = acquire(
        tmp_path, "positions", "--time", "2", "--channels", "DAPI,Cy5", "--positions",
        "0,0;50,0;0,50", "--labels", "A1,B1,C1",
    )  # fmt: skip
    images = validate(zarr.open_group(path, mode="r"))
    assert list(images) == ["0", "1", "2"]
    for label, image in zip(("A1", "B1", "C1"), images.values(), strict=True):
        assert multiscale(image)["name"] == f"position={label}"
        assert image["0"].shape == (2, 2, *FRAME)
        assert image["0"].metadata.dimension_names == ("time", "channel", "y", "x")
        assert [c["color"] for c in image.attrs["ome"]["omero"]["channels"]] == [
            "0000FF",
            "FF00FF",
        ]
        assert scale(image)[-2:] == [0.65, 0.65]
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {
        "position": ["A1", "B1", "C1"],
        "time": [0, 1],
        "channel": ["DAPI", "Cy5"],
    }
    assert_reads_back(path, images, 12)


def test_a_grid_scan_is_a_collection_of_its_tiles(tmp_path):
    path = acquire(tmp_path, "grid", "--plan", "grid_scan", "rows=2", "columns=3")
    images = validate(zarr.open_group(path, mode="r"))
    assert len(images) == 6
    assert multiscale(images["4"])["name"] == "row=1, column=1"
    assert all(image["0"].shape == FRAME for image in images.values())
    assert OMEZarrDataset(path).axes == {"row": [0, 1], "column": [0, 1, 2]}
    assert_reads_back(path, images, 6)


@pytest.mark.parametrize(
    "processor, options, frames",
    [
        ("background_subtraction:level=10", ("--time", "2", "--channels", "DAPI,FITC"), 4),
        ("max_intensity_projection", ("--time", "2", "--z", "0:4:2"), 2),
        ("max_intensity_projection:keep_planes=false", ("--channels", "DAPI", "--z", "0:2:2"), 1),
    ],
)
def test_processor_outputs_are_valid(tmp_path, processor, options, frames):
    path = acquire(
        tmp_path, "processed", *options, "--processor", f"napari-exengine.processor.{processor}"
    )
    images = validate(zarr.open_group(path, mode="r"))
    assert_reads_back(path, images, frames)


def run_until_stopped(handler: DataHandler, frames: int, **plan: object) -> None:
    acquisition = Acquisition(
        multi_d_acquisition_plan(num_time_points=math.inf, data_handler=handler, **plan), handler
    )
    acquisition.start()
    deadline = time.monotonic() + 30
    while acquisition.frames_stored < frames and time.monotonic() < deadline:
        time.sleep(0.01)
    acquisition.stop()
    acquisition.await_completion(timeout=30)
    assert acquisition.frames_stored >= frames


@pytest.mark.parametrize("positions", [None, [[0, 0], [20, 0]]], ids=["one image", "positions"])
def test_an_open_ended_run_is_valid_once_finished(scope, tmp_path, positions):
    storage = OMEZarrStorage(tmp_path, "open")
    handler = DataHandler(storage)
    run_until_stopped(
        handler, 12, channel_group="Channel", channels=["DAPI", "FITC"], xy_positions=positions
    )
    images = validate(zarr.open_group(storage.path, mode="r"))
    assert len(images) == (1 if positions is None else 2)
    # the time points every image reached (the last one may be partial: zeros where it is not)
    times = max(c["time"] for c in storage.get_coordinates_list()) + 1
    assert {image["0"].shape for image in images.values()} == {(times, 2, *FRAME)}
    assert_reads_back(storage.path, images, len(storage))


@pytest.mark.parametrize("positions", [None, [[0, 0], [20, 0]]], ids=["one image", "positions"])
def test_datasets_in_an_object_store_are_valid(scope, s3, positions):
    pytest.importorskip(
        "s3fs", reason="needs s3fs (the 'fsspec' extra): yaozarrs reads stores with it"
    )
    storage = OMEZarrStorage(s3.url, "remote")
    handler = DataHandler(storage)
    plan = multi_d_acquisition_plan(
        num_time_points=2,
        channel_group="Channel",
        channels=["DAPI", "FITC"],
        xy_positions=positions,
        data_handler=handler,
    )
    acquisition = Acquisition(plan, handler)
    acquisition.start()
    acquisition.await_completion(timeout=60)
    group = zarr.open_group(open_store(storage.path, read_only=True), mode="r")
    images = validate(group, storage.path)
    assert len(images) == (1 if positions is None else 2)
    dataset = OMEZarrDataset(storage.path)
    assert len(dataset.coordinates()) == len(storage) == 4 * len(images)
    for coords in dataset.coordinates():
        np.testing.assert_array_equal(dataset.read_frame(coords), storage.get_data(coords))


# ------------------------------------------------------------------------------- ome-zarr-py
@pytest.mark.parametrize(
    "options, images",
    [
        (("--time", "2", "--interval", "0.1", "--channels", "DAPI,FITC", "--z", "0:2:2"), 1),
        (("--time", "2", "--channels", "DAPI,FITC", "--positions", "0,0;50,0"), 2),
    ],
    ids=["one image", "positions"],
)
def test_ome_zarr_py_opens_every_image_with_its_shape_scale_and_channel_names(
    tmp_path, options, images
):
    """ome-zarr-py reads each image (a collection's from its path: it does not list a
    bioformats2raw collection's series itself)."""
    reader = pytest.importorskip("ome_zarr.reader", reason="needs ome-zarr (extra 'test')")
    from ome_zarr.io import parse_url

    path = acquire(tmp_path, "py", *options)
    written = validate(zarr.open_group(path, mode="r"))
    assert len(written) == images
    for name, image in written.items():
        (node, *_) = reader.Reader(parse_url(str(path / name)))()
        array = image["0"]
        assert node.data[0].shape == array.shape
        assert node.metadata["coordinateTransformations"][0][0]["scale"] == scale(image)
        assert node.metadata["channel_names"] == ["DAPI", "FITC"]
        assert [a["name"] for a in node.metadata["axes"]] == list(array.metadata.dimension_names)
        np.testing.assert_array_equal(np.asarray(node.data[0][1, 1]), array[1, 1])
