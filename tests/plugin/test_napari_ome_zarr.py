"""Our OME-Zarr and the napari-ome-zarr plugin, in a real napari viewer: napari-ome-zarr opens our
datasets (one image; a collection of positions) with their shape, scale and channel
names; and our reader opens OME-Zarr that ome-writers writes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from exengine.storage.omezarr_reader import OMEZarrDataset
from napari_exengine.lazy_array import LazyFrames
from omezarr_helpers import FRAME, acquire

pytestmark = pytest.mark.gui


def test_napari_ome_zarr_opens_our_image_with_its_shape_scale_and_channels(gui_viewer, tmp_path):
    path = acquire(
        tmp_path, "tcz", "--time", "2", "--interval", "0.1", "--channels", "DAPI,FITC", "--z",
        "0:4:2",
    )  # fmt: skip
    layers = gui_viewer.open(str(path), plugin="napari-ome-zarr")
    assert [layer.name.rsplit(" ", 1)[-1] for layer in layers] == ["DAPI", "FITC"]
    assert [layer.colormap.name for layer in layers] == ["blue", "green"]
    array = zarr.open_group(path, mode="r")["0"]
    for index, layer in enumerate(layers):
        assert layer.data.shape == (2, 3, *FRAME)  # time, z, y, x: the channel split off
        assert tuple(layer.axis_labels) == ("time", "z", "y", "x")
        assert tuple(layer.scale) == pytest.approx((0.1, 2.0, 0.65, 0.65))
        np.testing.assert_array_equal(np.asarray(layer.data[1, 1]), array[1, index, 1])


def test_napari_ome_zarr_opens_our_collection_of_positions(gui_viewer, tmp_path):
    """napari-ome-zarr lists a bioformats2raw collection's images from ``OME/METADATA.ome.xml``
    (OME-NGFF 0.5 lists them in the ``OME`` group's ``series``): we write both."""
    path = acquire(
        tmp_path, "pos", "--time", "2", "--channels", "DAPI,FITC", "--positions", "0,0;50,0"
    )
    series = zarr.open_group(path, mode="r")["OME"].attrs["ome"]["series"]
    assert series == ["0", "1"]
    dataset = OMEZarrDataset(path)
    layers = gui_viewer.open(str(path), plugin="napari-ome-zarr")
    assert len(layers) == 4  # two images of two channels
    for index, layer in enumerate(layers):
        image, channel = divmod(index, 2)
        assert layer.name.rsplit(" ", 1)[-1] == ["DAPI", "FITC"][channel]
        assert layer.data.shape == (2, *FRAME)
        assert tuple(layer.axis_labels) == ("time", "y", "x")
        assert tuple(layer.scale) == pytest.approx((1.0, 0.65, 0.65))
        coords = {"position": dataset.axes["position"][image], "time": 1}
        np.testing.assert_array_equal(
            np.asarray(layer.data[1]),
            dataset.read_frame({**coords, "channel": ["DAPI", "FITC"][channel]}),
        )


def test_our_reader_opens_ome_writers_positions_in_the_viewer(gui_viewer, tmp_path):
    from ome_writers import AcquisitionSettings, Dimension, Position, create_stream

    dimensions = [
        Dimension(name="t", count=2, type="time", unit="second", scale=3.0),
        Dimension(name="p", type="position", coords=[Position(name="A"), Position(name="B")]),
        Dimension(name="c", count=2, type="channel", coords=["DAPI", "Cy5"]),
        Dimension(name="y", count=16, type="space", unit="micrometer", scale=0.325),
        Dimension(name="x", count=24, type="space", unit="micrometer", scale=0.325),
    ]
    settings = AcquisitionSettings(
        root_path=str(tmp_path / "theirs.ome.zarr"), dimensions=dimensions, dtype="uint16"
    )
    with create_stream(settings) as stream:
        for i in range(8):
            stream.append(np.full((16, 24), i, np.uint16))
    layers = gui_viewer.open(settings.root_path, plugin="napari-exengine")
    assert [layer.name for layer in layers] == ["theirs.ome.zarr DAPI", "theirs.ome.zarr Cy5"]
    for layer in layers:
        assert isinstance(layer.data, LazyFrames)
        assert layer.data.shape == (2, 2, 16, 24)
        assert tuple(layer.axis_labels) == ("position", "t", "y", "x")
        assert tuple(layer.scale) == pytest.approx((1.0, 3.0, 0.325, 0.325))
        assert layer.metadata["axis_values"]["position"] == ["A", "B"]
    gui_viewer.dims.current_step = (1, 1, 0, 0)
    assert layers[1].get_value((1, 1, 3, 4)) == 7  # B, t 1, Cy5: the last frame written
