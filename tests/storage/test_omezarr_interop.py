"""OME-Zarr written by other software opens with our reader, ``exengine info`` and our napari
reader: ome-writers' datasets from each of its zarr backends (tensorstore, acquire-zarr,
zarr-python) as one image, a collection of named positions, an HCS plate and an open-ended run, and
the datasets pymmcore-plus writes from a real MDA (on pure-Python Micro-Manager devices). Each frame
is checked against the one written (its number travels in the frame's metadata)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import useq
from ome_writers import (
    AcquisitionSettings,
    Channel,
    Dimension,
    OmeZarrFormat,
    Plate,
    Position,
    create_stream,
)

from exengine.storage.omezarr_reader import OMEZarrDataset
from napari_exengine.cli import main
from napari_exengine.reader import get_reader, is_omezarr, read_omezarr

BACKENDS = ["tensorstore", "acquire-zarr", "zarr-python"]
FRAME = (24, 32)


def space(name: str, count: int, scale: float) -> Dimension:
    return Dimension(name=name, count=count, type="space", unit="micrometer", scale=scale)


TIME = Dimension(name="t", count=2, type="time", unit="second", scale=2.5)
CHANNELS = Dimension(
    name="c", count=2, type="channel", coords=[Channel(name="DAPI", color="blue"), "GFP"]
)
Z = space("z", 3, 0.5)
YX = [space("y", FRAME[0], 0.65), space("x", FRAME[1], 0.65)]


def write(path: Path, dimensions: list, backend: str, frames: int, **settings) -> Path:
    """Write ``frames`` frames with ome-writers, frame ``i`` full of ``i`` and ``{"i": i}`` its
    metadata."""
    settings = AcquisitionSettings(
        root_path=str(path),
        dimensions=dimensions,
        dtype="uint16",
        format=OmeZarrFormat(backend=backend),
        **settings,
    )
    with create_stream(settings) as stream:
        for i in range(frames):
            metadata = {"ElapsedTime-ms": 10.0 * i, "i": i}
            stream.append(np.full(FRAME, i, np.uint16), frame_metadata=metadata)
    return path


def info(path: Path) -> str:
    out = io.StringIO()
    assert main(["info", str(path)], stream=out) == 0, out.getvalue()
    return out.getvalue()


def assert_every_frame_is_the_one_written(dataset: OMEZarrDataset, frames: int) -> None:
    coordinates = dataset.coordinates()
    assert len(coordinates) == frames
    numbers = set()
    for coords in coordinates:
        number = dataset.read_metadata(coords)["i"]
        assert (dataset.read_frame(coords) == number).all(), coords
        numbers.add(number)
    assert numbers == set(range(frames))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ome_writers_image_opens_with_its_axes_scales_and_channels(tmp_path, backend):
    path = write(tmp_path / "tcz.ome.zarr", [TIME, CHANNELS, Z, *YX], backend, 12)
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {"t": [0, 1], "c": ["DAPI", "GFP"], "z": [0, 1, 2]}
    assert dataset.scale == {"t": 2.5, "c": 1.0, "z": 0.5, "y": 0.65, "x": 0.65}
    assert dataset.finished is None and dataset.channel_axis == "c"
    assert_every_frame_is_the_one_written(dataset, 12)
    # t 1, GFP, z 2 is the 12th frame ome-writers was given (t, c, z in acquisition order)
    assert dataset.read_frame({"t": 1, "c": "GFP", "z": 2})[0, 0] == 11

    text = info(path)
    assert "Format: OME-Zarr 0.5 (zarr v3)\nFrames: 12\nFrame: 24 x 32 uint16\n" in text
    assert "Pixel size: 0.65 µm; z step: 0.5 µm" in text
    assert "  t: 2 (0, 1)\n  c: 2 (DAPI, GFP)\n  z: 3 (0, 1, 2)\n" in text
    assert "First/last timestamps: 0.0 ms / 110.0 ms" in text

    assert is_omezarr(path) and get_reader(str(path)) is read_omezarr
    layers = read_omezarr(str(path))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["tcz.ome.zarr DAPI", "tcz.ome.zarr GFP"]
    assert [kwargs["colormap"] for _, kwargs, _ in layers] == ["blue", "green"]
    for data, kwargs, kind in layers:
        assert kind == "image" and data.shape == (2, 3, *FRAME) and data.dtype == np.uint16
        assert kwargs["axis_labels"] == ["t", "z", "y", "x"]
        assert kwargs["scale"] == [2.5, 0.5, 0.65, 0.65]
    assert (np.asarray(layers[1][0][1, 2]) == 11).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_ome_writers_collection_of_named_positions_is_one_dataset(tmp_path, backend):
    positions = Dimension(
        name="p", type="position", coords=[Position(name="A1-site0"), Position(name="B2")]
    )
    path = write(tmp_path / "p.ome.zarr", [TIME, positions, CHANNELS, *YX], backend, 8)
    dataset = OMEZarrDataset(path)
    assert dataset.image_axes == ["position"]
    assert dataset.axes == {"position": ["A1-site0", "B2"], "t": [0, 1], "c": ["DAPI", "GFP"]}
    assert_every_frame_is_the_one_written(dataset, 8)
    # t 0, B2, DAPI: the 3rd frame given (t, p, c in acquisition order)
    assert dataset.read_frame({"position": "B2", "t": 0, "c": "DAPI"})[0, 0] == 2

    text = info(path)
    assert "Frames: 8\n" in text and "  position: 2 (A1-site0, B2)\n" in text
    assert "Pixel size: 0.65 µm; z step: not recorded" in text

    layers = read_omezarr(str(path))
    assert len(layers) == 2
    for data, kwargs, _ in layers:
        assert data.shape == (2, 2, *FRAME) and kwargs["axis_labels"] == ["position", "t", "y", "x"]
        assert kwargs["scale"] == [1.0, 2.5, 0.65, 0.65]
        assert kwargs["metadata"]["axis_values"]["position"] == ["A1-site0", "B2"]
    assert (np.asarray(layers[1][0][1, 1]) == 7).all()  # B2, t 1, GFP


def test_an_ome_writers_plate_reads_field_by_field(tmp_path):
    fields = Dimension(
        name="p",
        type="position",
        coords=[
            Position(name="f0", plate_row="A", plate_column="1"),
            Position(name="f0", plate_row="B", plate_column="2"),
        ],
    )
    plate = Plate(row_names=["A", "B"], column_names=["1", "2"])
    path = write(tmp_path / "plate.ome.zarr", [TIME, fields, *YX], "tensorstore", 4, plate=plate)
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {"position": ["A/1/f0", "B/2/f0"], "t": [0, 1]}
    assert_every_frame_is_the_one_written(dataset, 4)
    assert "Frames: 4\n" in info(path) and "  position: 2 (A/1/f0, B/2/f0)\n" in info(path)
    (data, kwargs, _), = read_omezarr(str(path))  # fmt: skip
    assert data.shape == (2, 2, *FRAME) and kwargs["axis_labels"] == ["position", "t", "y", "x"]


def test_an_open_ended_ome_writers_run_shows_the_frames_it_took(tmp_path):
    """An unbounded time axis: the array grows in steps; the frames recorded say how far."""
    time = Dimension(name="t", count=None, type="time", unit="second", scale=1.0)
    path = write(tmp_path / "open.ome.zarr", [time, CHANNELS, *YX], "tensorstore", 7)
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {"t": [0, 1, 2, 3], "c": ["DAPI", "GFP"]}
    assert_every_frame_is_the_one_written(dataset, 7)
    assert "Frames: 7\n" in info(path)


@pytest.fixture
def demo_core():
    from exengine.backends.micromanager_demo import create_demo_core

    return create_demo_core(shape=FRAME)


def test_a_pymmcore_plus_mda_with_positions_opens_with_scales_and_channels(tmp_path, demo_core):
    """pymmcore-plus writes ``*.ome.zarr`` outputs through ome-writers; a time interval of 0 is a
    time scale of 0, which napari cannot show: the layers' time scale is 1."""
    sequence = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        stage_positions=[(0, 0, 0), (10, 10, 0)],
        axis_order="tpcz",
    )
    path = tmp_path / "mda.ome.zarr"
    demo_core.mda.run(sequence, output=str(path))
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {
        "position": ["0", "1"],
        "t": [0, 1],
        "c": ["DAPI", "FITC"],
        "z": [0, 1, 2],
    }
    assert len(dataset.coordinates()) == 24
    assert dataset.scale["x"] == 0.65 and dataset.scale["z"] == 1.0
    assert dataset.read_metadata(dataset.coordinates()[0])["delta_t"] >= 0  # seconds

    text = info(path)
    assert "Frames: 24\nFrame: 24 x 32 uint16\n" in text
    assert "Pixel size: 0.65 µm; z step: 1 µm" in text and " ms / " in text
    assert "  c: 2 (DAPI, FITC)\n" in text

    layers = read_omezarr(str(path))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["mda.ome.zarr DAPI", "mda.ome.zarr FITC"]
    for data, kwargs, _ in layers:
        assert data.shape == (2, 2, 3, *FRAME)
        assert kwargs["axis_labels"] == ["position", "t", "z", "y", "x"]
        assert kwargs["scale"] == [1.0, 1.0, 1.0, 0.65, 0.65]
    # the demo camera's frames differ by filter: the layers show what the arrays hold
    image = json.loads((path / "1" / "zarr.json").read_text())["attributes"]["ome"]
    assert [c["label"] for c in image["omero"]["channels"]] == ["DAPI", "FITC"]
    np.testing.assert_array_equal(
        np.asarray(layers[1][0][1, 0, 2]),
        dataset.read_frame({"position": "1", "t": 0, "c": "FITC", "z": 2}),
    )


def test_a_pymmcore_plus_mda_of_one_image_opens(tmp_path, demo_core):
    sequence = useq.MDASequence(
        time_plan={"interval": 0.5, "loops": 3}, channels=["DAPI"], z_plan={"range": 1, "step": 0.5}
    )
    path = tmp_path / "one.ome.zarr"
    demo_core.mda.run(sequence, output=str(path))
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {"t": [0, 1, 2], "c": ["DAPI"], "z": [0, 1, 2]}
    assert "Frames: 9\n" in info(path) and "z step: 0.5 µm" in info(path)
    (data, kwargs, _), = read_omezarr(str(path))  # fmt: skip
    assert data.shape == (3, 3, *FRAME) and kwargs["scale"] == [0.5, 0.5, 0.65, 0.65]


def test_the_zarr_array_of_pymmcore_plus_tensorstore_handler_opens_with_its_sequence_axes(
    tmp_path, demo_core
):
    """``TensorStoreHandler`` writes a zarr v2 array without OME metadata; its attributes list each
    frame's metadata with the MDA event, whose sequence gives the axes, channels and scales."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the handlers are deprecated upstream
        from pymmcore_plus.mda.handlers import TensorStoreHandler

    sequence = useq.MDASequence(
        time_plan={"interval": 0.25, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        stage_positions=[(0, 0, 0), (10, 10, 0)],
        axis_order="tpcz",
    )
    path = tmp_path / "handler.zarr"
    handler = TensorStoreHandler(path=str(path))
    demo_core.mda.run(sequence, output=handler)
    dataset = OMEZarrDataset(path)
    assert dataset.axes == {"t": [0, 1], "p": [0, 1], "c": ["DAPI", "FITC"], "z": [0, 1, 2]}
    assert dataset.scale == {"t": 0.25, "z": 1.0, "y": 0.65, "x": 0.65}
    assert len(dataset.coordinates()) == 24
    frame = dataset.read_frame({"t": 1, "p": 1, "c": "FITC", "z": 2})
    np.testing.assert_array_equal(frame, handler.isel(t=1, p=1, c=1, z=2))

    text = info(path)
    assert (
        "Format: zarr array without OME metadata, from pymmcore-plus's TensorStoreHandler (zarr v2)"
        "\nFrames: 24\n"
    ) in text
    assert "Pixel size: 0.65 µm; z step: 1 µm" in text and "  c: 2 (DAPI, FITC)\n" in text
    assert get_reader(str(path)) is read_omezarr
    layers = read_omezarr(str(path))
    assert [kwargs["name"] for _, kwargs, _ in layers] == ["handler.zarr DAPI", "handler.zarr FITC"]
    data, kwargs, _ = layers[1]
    assert data.shape == (2, 2, 3, *FRAME) and kwargs["axis_labels"] == ["t", "p", "z", "y", "x"]
    assert kwargs["scale"] == [0.25, 1.0, 1.0, 0.65, 0.65]
    np.testing.assert_array_equal(np.asarray(data[1, 1, 2]), frame)
