"""Reader, writer and sample data: real datasets from other software, ndstorage-written ones, our
OME-TIFF files, round trips."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import ndstorage
import numpy as np
import pytest
import tifffile

from exengine.data import PlannedData
from exengine.storage import OMETiffStorage
from exengine.storage.ndtiff_reader import NDTiffReader
from napari_exengine.lazy_array import LazyFrames
from napari_exengine.reader import get_reader, read_ndtiff, refresh_layers
from napari_exengine.writer import lossless_frames, write_ndtiff

DATASETS = {
    "v2/ndtiffv2.0_test": {"DAPI": (5, 32, 32), "FITC": (5, 32, 32)},
    "v3/12_bit_pycromanager_mda": {"DAPI": (4, 64, 64), "FITC": (4, 64, 64)},
    "v3/labeled_positions_1": {None: (3, 512, 512)},
    "v3/ndtiff3.2_multichannel": {"DAPI": (8, 16, 64, 64), "FITC": (8, 16, 64, 64)},
}


def ndstorage_open(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return ndstorage.Dataset(str(path))


def by_channel(layers):
    return {
        kwargs["metadata"]["fixed_coordinates"].get("channel"): (data, kwargs)
        for data, kwargs, _ in layers
    }


@pytest.mark.parametrize("name", list(DATASETS))
def test_datasets_from_other_software(testdata, name):
    path = testdata / name
    layers = by_channel(get_reader(str(path))(str(path)))
    assert {c: d.shape for c, (d, _) in layers.items()} == DATASETS[name]
    dataset = ndstorage_open(path)
    level = dataset.res_levels[0] if hasattr(dataset, "res_levels") else dataset
    for channel, (data, kwargs) in layers.items():
        assert kwargs["axis_labels"][-2:] == ["y", "x"]
        values = kwargs["metadata"]["axis_values"]
        position = tuple(len(values[a]) - 1 for a in kwargs["axis_labels"][:-2])
        coords = {**kwargs["metadata"]["fixed_coordinates"], **{a: values[a][-1] for a in values}}
        if name.startswith("v2"):
            coords["channel"] = list(dataset.get_channel_names()).index(channel)
            expected = dataset.read_image(**coords)
        else:
            expected = level.read_image(**coords)
        np.testing.assert_array_equal(np.asarray(data[position]), expected)


def test_string_position_labels_are_kept(testdata):
    _, kwargs, _ = read_ndtiff(str(testdata / "v3/labeled_positions_1"))[0]
    assert kwargs["axis_labels"] == ["position", "y", "x"]
    assert kwargs["metadata"]["axis_values"]["position"] == ["Pos0", "Pos1", "Pos2"]
    assert kwargs["metadata"]["read_frame_metadata"]({"position": "Pos1"})["Channel"] == "DAPI"


def test_index_file_path_opens_too(testdata):
    index = testdata / "v3/ndtiff3.2_multichannel/NDTiff.index"
    assert get_reader(str(index)) is not None
    assert len(read_ndtiff(str(index))) == 2


def test_multiresolution_opens_as_multiscale(testdata):
    data, kwargs, _ = read_ndtiff(str(testdata / "v3/ndtiffv3.0_stitched_test"))[0]
    assert kwargs["multiscale"] and len(data) >= 2
    heights = [level.shape[-2] for level in data]
    assert heights == sorted(heights, reverse=True) and len(set(heights)) == len(heights)
    dataset = ndstorage_open(testdata / "v3/ndtiffv3.0_stitched_test")
    expected = np.asarray(dataset.as_array(stitched=True, res_level=0, channel=0))
    np.testing.assert_array_equal(np.asarray(data[0]), expected)


def test_rgb_explore_opens_as_rgb_multiscale(testdata):
    data, kwargs, _ = read_ndtiff(str(testdata / "v3/ndtiff3.2_magellan_explore_rgb"))[0]
    assert kwargs["rgb"] and kwargs["multiscale"]
    assert data[0].shape[-1] == 3 and data[0].dtype == np.uint8
    dataset = ndstorage_open(testdata / "v3/ndtiff3.2_magellan_explore_rgb")
    expected = np.asarray(dataset.as_array(stitched=True, res_level=0, z=0))
    np.testing.assert_array_equal(np.asarray(data[0][0]), expected)
    assert kwargs["scale"][0] == 25.0


def write_with_ndstorage(root, frames, summary=None):
    dataset = ndstorage.NDTiffDataset(str(root), name="written", writable=True)
    dataset.initialize(summary or {})
    for coords, image, metadata in frames:
        dataset.put_image(coords, image, metadata)
    dataset.finish()
    return dataset.path


def test_ndstorage_written_custom_axes_string_channels_and_missing_frames(tmp_path):
    frames = [
        (
            {"time": t, "channel": c, "z": z, "angle": a},
            np.full((8, 8), 100 * t + 10 * z + a, np.uint16),
            {"PixelSizeUm": 0.5},
        )
        for t in range(2)
        for c in ("GFP", "mCherry")
        for z in range(3)
        for a in range(2)
        if not (t == 1 and z == 2)
    ]
    path = write_with_ndstorage(tmp_path, frames, {"z-step_um": 2.0})
    layers = by_channel(read_ndtiff(path))
    assert set(layers) == {"GFP", "mCherry"}
    data, kwargs = layers["mCherry"]
    assert kwargs["axis_labels"] == ["time", "angle", "z", "y", "x"]
    assert data.shape == (2, 2, 3, 8, 8)
    assert np.asarray(data[1, 1, 1])[0, 0] == 111
    assert np.asarray(data[1, 0, 2]).max() == 0, "a missing frame reads as blank"
    assert kwargs["scale"] == [1.0, 1.0, 2.0, 0.5, 0.5]


def test_uint8_and_positions(tmp_path):
    frames = [
        ({"position": p}, np.full((4, 4), i, np.uint8), {}) for i, p in enumerate(("A1", "B7"))
    ]
    data, _, _ = read_ndtiff(write_with_ndstorage(tmp_path, frames))[0]
    assert data.dtype == np.uint8 and np.asarray(data[1])[0, 0] == 1


def test_not_ndtiff_returns_no_reader(tmp_path):
    (tmp_path / "image.png").write_bytes(b"x")
    assert get_reader(str(tmp_path)) is None
    assert get_reader(str(tmp_path / "image.png")) is None
    assert get_reader([str(tmp_path), str(tmp_path)]) is None


def test_corrupt_index_names_the_file(tmp_path):
    path = write_with_ndstorage(tmp_path, [({"time": 0}, np.zeros((4, 4), np.uint16), {})])
    index = f"{path}/NDTiff.index"
    with open(index, "r+b") as f:
        f.seek(4)
        f.write(b"\xff\xfe{{garbage")
    with pytest.raises(ValueError, match=r"NDTiff\.index is corrupt"):
        read_ndtiff(path)


def test_dataset_being_written_is_refreshed(tmp_path):
    dataset = ndstorage.NDTiffDataset(str(tmp_path), name="live", writable=True)
    dataset.initialize({})
    for t in range(3):
        dataset.put_image({"time": t}, np.full((4, 4), t, np.uint16), {})
    dataset._index_file.flush()
    layers = read_ndtiff(dataset.path)
    assert layers[0][0].shape == (3, 4, 4)

    def more():
        for t in range(3, 10):
            dataset.put_image({"time": t}, np.full((4, 4), t, np.uint16), {})
            dataset._index_file.flush()
            time.sleep(0.01)

    writer = threading.Thread(target=more)
    writer.start()
    writer.join(10)

    class FakeLayer:
        def __init__(self, data, kwargs):
            self.data, self.name, self.metadata = data, kwargs["name"], kwargs["metadata"]

    layer = FakeLayer(layers[0][0], layers[0][1])
    assert refresh_layers([layer]) == 7
    assert layer.data.shape == (10, 4, 4)
    assert np.asarray(layer.data[9])[0, 0] == 9
    dataset.finish()


def test_truncated_index_opens_the_readable_part(tmp_path):
    path = write_with_ndstorage(
        tmp_path, [({"time": t}, np.full((4, 4), t, np.uint16), {}) for t in range(4)]
    )
    index = f"{path}/NDTiff.index"
    with open(index, "rb") as f:
        raw = f.read()
    with open(index, "wb") as f:
        f.write(raw[:-10])
    with pytest.warns(UserWarning, match="incomplete entry"):
        assert len(NDTiffReader(path).entries) == 3


def test_writer_round_trip_and_independent_tiff_reader(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 4096, (3, 4, 16, 16), dtype=np.uint16)
    target = tmp_path / "saved.ndtiff"
    attributes = {
        "axis_labels": ["time", "z", "y", "x"],
        "scale": [1.0, 2.5, 0.3, 0.3],
        "name": "cells",
    }
    assert write_ndtiff(str(target), data, attributes) == [str(target)]
    back, kwargs, _ = read_ndtiff(str(target))[0]
    assert kwargs["axis_labels"] == ["time", "z", "y", "x"]
    assert kwargs["scale"] == [1.0, 2.5, 0.3, 0.3]
    np.testing.assert_array_equal(np.asarray(back), data)
    pages = tifffile.TiffFile(next(target.glob("*.tif"))).pages
    read = {i: page.asarray() for i, page in enumerate(pages)}
    assert len(read) == 12
    np.testing.assert_array_equal(read[5], data.reshape(12, 16, 16)[5])
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_ndtiff(str(target), data, attributes)


def test_writer_axis_order_is_kept(tmp_path):
    data = np.arange(2 * 3 * 4 * 4, dtype=np.uint16).reshape(2, 3, 4, 4)
    write_ndtiff(
        str(tmp_path / "zt"), data, {"axis_labels": ["z", "time", "y", "x"], "scale": [1, 1, 1, 1]}
    )
    back, kwargs, _ = read_ndtiff(str(tmp_path / "zt"))[0]
    assert kwargs["axis_labels"] == ["z", "time", "y", "x"]
    np.testing.assert_array_equal(np.asarray(back), data)


@pytest.mark.parametrize(
    "data, expected",
    [
        (np.array([[1, 2]], np.int32), np.uint16),
        (np.array([[True]]), np.uint8),
        (np.array([[3.0]]), np.uint16),
    ],
)
def test_lossless_conversions(data, expected):
    assert lossless_frames(data).dtype == expected


@pytest.mark.parametrize(
    "data, message",
    [
        (np.array([[0.5]]), "fractional"),
        (np.array([[-1]], np.int16), "0..65535"),
        (np.array([[70000]], np.int64), "0..65535"),
        (np.array([["a"]]), "cannot be converted"),
    ],
)
def test_lossy_conversions_are_refused(data, message):
    with pytest.raises((TypeError, ValueError), match=message):
        lossless_frames(data)


def test_sample_data_runs_the_engine():
    from napari_exengine.sample_data import simulated_acquisition

    layers = simulated_acquisition(time_points=2, z_planes=3, size=64)
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["simulated DAPI", "simulated FITC"]
    assert [kwargs["colormap"] for _, kwargs, _ in layers] == ["blue", "green"]  # by dye
    stack = layers[0][0]
    assert stack.shape == (2, 3, 64, 64) and stack.dtype == np.uint16
    assert np.abs(stack[0, 0].astype(float) - stack[0, 2]).mean() > 1, "z planes differ"
    assert np.abs(stack.astype(float) - layers[1][0]).mean() > 1, "channels differ"


@pytest.mark.gui
def test_viewer_opens_dataset_and_sample(gui_viewer, testdata, tmp_path):
    layers = gui_viewer.open(str(testdata / "v3/ndtiff3.2_multichannel"), plugin="napari-exengine")
    assert [layer.name for layer in layers] == [
        "ndtiff3.2_multichannel DAPI",
        "ndtiff3.2_multichannel FITC",
    ]
    assert tuple(layers[0].axis_labels) == ("time", "z", "y", "x")
    gui_viewer.open_sample("napari-exengine", "simulated_acquisition")
    assert "simulated DAPI" in gui_viewer.layers
    target = tmp_path / "out.ndtiff"
    written = gui_viewer.layers["simulated DAPI"].save(str(target), plugin="napari-exengine")
    assert written == [str(target)]
    assert NDTiffReader(target).axes["time"] == [0, 1, 2]


ALL_DATASETS = [*DATASETS, "v3/ndtiffv3.0_stitched_test", "v3/ndtiff3.2_magellan_explore_rgb"]


@pytest.mark.gui
@pytest.mark.parametrize("name", ALL_DATASETS)
def test_every_dataset_opens_as_layers_in_a_viewer(gui_viewer, testdata, name):
    """napari checks layer data against its own protocols (shape, dtype, size, ...) only in a
    viewer."""
    expected = read_ndtiff(str(testdata / name))
    layers = gui_viewer.open(str(testdata / name), plugin="napari-exengine")
    assert len(layers) == len(expected)
    for layer, (data, kwargs, _) in zip(layers, expected, strict=True):
        assert layer.multiscale == kwargs.get("multiscale", False)
        level = layer.data[0] if layer.multiscale else layer.data
        assert level.shape == (data[0] if layer.multiscale else data).shape
        assert np.asarray(level[(0,) * (level.ndim - (3 if layer.rgb else 2))]).size > 0


def test_one_layer_with_a_channel_axis_when_asked(testdata):
    layers = read_ndtiff(str(testdata / "v3/ndtiff3.2_multichannel"), split_channels=False)
    assert len(layers) == 1
    data, kwargs, _ = layers[0]
    assert kwargs["axis_labels"] == ["time", "channel", "z", "y", "x"]
    assert data.shape == (8, 2, 16, 64, 64)
    assert kwargs["metadata"]["axis_values"]["channel"] == ["DAPI", "FITC"]


def write_ometiff(directory) -> str:
    """An OME-TIFF of 2 positions x 2 time points x 2 channels x 3 z planes, 6 x 8 frames."""
    with OMETiffStorage(directory, "tiff", {"z-step_um": 2.5}, pixel_size_um=0.325) as storage:
        sizes = {"position": 2, "time": 2, "channel": 2, "z": 3}
        storage.prepare(PlannedData(sizes, {"channel": ("FITC", "DAPI")}))
        for position in ("A1", "B2"):
            for t in range(2):
                for channel in ("DAPI", "FITC"):
                    for z in range(3):
                        coords = {"position": position, "time": t, "channel": channel, "z": z}
                        value = 1000 * (position == "B2") + 100 * t + 10 * (channel == "FITC") + z
                        storage.put(coords, np.full((6, 8), value, np.uint16), {})
    return storage.path


@pytest.mark.gui
def test_viewer_opens_our_ome_tiff_as_lazy_layers(gui_viewer, tmp_path):
    path = write_ometiff(tmp_path)
    layers = gui_viewer.open(path, plugin="napari-exengine")  # npe2's discovery of our reader
    assert [layer.name for layer in layers] == ["tiff_1.ome.tif FITC", "tiff_1.ome.tif DAPI"]
    assert [layer.colormap.name for layer in layers] == ["green", "blue"]  # by dye
    for layer in layers:
        assert isinstance(layer.data, LazyFrames)  # frames are read when shown
        assert tuple(layer.axis_labels) == ("position", "time", "z", "y", "x")
        assert layer.data.shape == (2, 2, 3, 6, 8) and layer.data.dtype == np.uint16
        assert list(layer.scale) == [1.0, 1.0, 2.5, 0.325, 0.325]
        assert layer.metadata["axis_values"]["position"] == ["A1", "B2"]
    fitc = layers[0]
    assert np.asarray(fitc.data[1, 1, 2]).tolist() == np.full((6, 8), 1112).tolist()
    gui_viewer.dims.current_step = (0, 1, 2, 0, 0)
    assert layers[1].get_value((0, 1, 2, 3, 4)) == 102  # the slice shown: A1, t 1, DAPI, z 2
    gui_viewer.dims.current_step = (1, 0, 1, 0, 0)
    assert layers[1].get_value((1, 0, 1, 3, 4)) == 1001  # B2, t 0, DAPI, z 1


def test_other_softwares_ome_tiff_is_declined(tmp_path):
    assert get_reader(write_ometiff(tmp_path)) is not None
    theirs = tmp_path / "theirs.ome.tif"
    tifffile.imwrite(theirs, np.zeros((2, 4, 4), np.uint8), ome=True)
    assert get_reader(str(theirs)) is None  # other software's: napari's own reader opens them
