"""OME-TIFF storage on tifffile: tifffile reads what it writes as OME-TIFF (every frame at its
plane, channel names, pixel size, z step, time increment, positions as series), written directly,
by the engine and DataHandler on the simulated microscope, and from the command line; frames read
back while writing; a write that fails is cut off; what a SIGKILL leaves, and its repair;
``exengine info`` and the napari reader on finished and SIGKILLed files. No mocks."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from exengine import ExecutionEngine
from exengine.data import DataHandler, PlannedData
from exengine.events import multi_d_acquisition_events
from exengine.storage import OMETiffStorage
from exengine.storage.ometiff import PLACEHOLDER, RECORD_TAG, repair
from napari_exengine.cli import main
from napari_exengine.contributions import build_storage, get_contribution
from napari_exengine.reader import get_reader, read_ometiff

ome_types = pytest.importorskip("ome_types", reason="validates the OME-XML against its schema")

OMETIFF = "napari-exengine.storage.ometiff"


def read_ome(path: str) -> tuple[tifffile.TiffFile, object]:
    """The file, opened by tifffile, and its OME-XML, validated against the OME schema."""
    tiff = tifffile.TiffFile(path)
    assert tiff.is_ome
    return tiff, ome_types.from_xml(tiff.ome_metadata, validate=True)


def value(t: int, c: int, z: int) -> int:
    return 1 + 100 * t + 10 * c + z


def test_tifffile_reads_every_frame_at_its_plane_with_channels_and_scales(tmp_path):
    (tmp_path / "run_1.ome.tif").write_bytes(b"kept")  # a name never reused
    summary = {"z-step_um": 0.5, "Interval_ms": 250.0}
    with OMETiffStorage(tmp_path, "run", summary) as storage:
        storage.prepare(
            PlannedData(
                axis_sizes={"time": 2, "position": 2, "channel": 2, "z": 3},
                axis_values={"position": ("A", "B"), "channel": ("FITC", "DAPI")},
                pixel_size_um=0.325,
            )
        )
        for t in range(2):
            for position in ("B", "A"):  # images in the order they come
                for c, channel in ((1, "DAPI"), (0, "FITC")):  # channels in the planned order
                    for z in range(3):
                        coords = {"time": t, "position": position, "channel": channel, "z": z}
                        frame = np.full((6, 8), value(t, c, z) + (position == "A"), np.uint16)
                        storage.put(coords, frame, {"PixelSizeUm": 9.0, "StageZ-um": z * 0.5})
                        # readable once put returns
                        np.testing.assert_array_equal(storage.get_data(coords), frame)
                        assert storage.get_data(coords).flags.writeable
                        assert coords in storage
        assert storage.get_metadata({"time": 1, "position": "A", "channel": "DAPI", "z": 2}) == {
            "PixelSizeUm": 9.0,
            "StageZ-um": 1.0,
        }
        storage.annotate({"FramesDropped": 0, "DroppedCoordinates": []})
    assert os.path.basename(storage.path) == "run_2.ome.tif" and len(storage) == 24
    assert (tmp_path / "run_1.ome.tif").read_bytes() == b"kept"
    tiff, ome = read_ome(storage.path)
    with tiff:
        assert len(tiff.pages) == 24
        assert [(s.shape, s.axes) for s in tiff.series] == [((2, 2, 3, 6, 8), "TCZYX")] * 2
        for series, position in zip(tiff.series, ("B", "A"), strict=True):
            data = series.asarray()
            for t, c, z in np.ndindex(2, 2, 3):
                assert (data[t, c, z] == value(t, c, z) + (position == "A")).all()
    assert [image.name for image in ome.images] == ["position=B", "position=A"]
    pixels = ome.images[0].pixels
    assert [channel.name for channel in pixels.channels] == ["FITC", "DAPI"]
    assert pixels.physical_size_x == pixels.physical_size_y == 0.325  # the plan's, not the frame's
    assert pixels.physical_size_z == 0.5 and pixels.time_increment == 0.25
    assert [p.position_z for p in pixels.planes[:3]] == [0.0, 0.5, 1.0]
    annotation = ome.structured_annotations.comment_annotations[0].value
    assert '"FramesDropped": 0' in annotation and '"z-step_um": 0.5' in annotation


def test_pixel_size_from_the_frames_and_frames_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="bigtiff must be True, False or None"):
        OMETiffStorage(tmp_path, bigtiff="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pixel_size_um must be a positive number"):
        OMETiffStorage(tmp_path, pixel_size_um=0)
    with pytest.raises(ValueError, match="plain file name"):
        OMETiffStorage(tmp_path, "a/b")
    storage = OMETiffStorage(tmp_path, "refused", bigtiff=False)
    for frame in (np.zeros((4, 4), np.int64), np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4))):
        with pytest.raises(TypeError, match="non-empty 2-D frames"):
            storage.put({"time": 0}, frame, {})
    storage.put({"time": 0}, np.zeros((4, 4), np.float32), {"PixelSizeUm": 0.65})
    bad = [
        ({"time": 1}, np.zeros((4, 4, 3), np.float32), "share axes"),
        ({"time": 1}, np.zeros((4, 4), np.int64), "share axes"),
        ({"time": 1}, np.zeros((5, 4), np.float32), "share axes"),
        ({"time": 1, "z": 0}, np.zeros((4, 4), np.float32), "share axes"),
        ({"time": "late"}, np.zeros((4, 4), np.float32), "one kind of value"),
        ({"time": -1}, np.zeros((4, 4), np.float32), "non-negative"),
        ({"time": 0}, np.zeros((4, 4), np.float32), "already stored"),
    ]
    for coords, frame, message in bad:
        with pytest.raises((TypeError, ValueError), match=message):
            storage.put(coords, frame, {})
    storage.put({"time": 1}, np.ones((4, 4), np.float32), {})
    storage.close()
    with pytest.raises(RuntimeError, match="finished"):
        storage.put({"time": 2}, np.ones((4, 4), np.float32), {})
    tiff, ome = read_ome(storage.path)
    with tiff:
        assert not tiff.is_bigtiff and len(tiff.pages) == 2
        assert tiff.series[0].asarray().tolist() == [
            np.zeros((4, 4)).tolist(),
            np.ones((4, 4)).tolist(),
        ]
    assert (
        ome.images[0].pixels.physical_size_x == 0.65 and ome.images[0].pixels.type.value == "float"
    )


def test_bigtiff_unless_the_plan_fits_a_classic_tiff_and_no_frame_no_file(tmp_path):
    def bigtiff(planned: PlannedData | None) -> bool:
        storage = OMETiffStorage(tmp_path)
        if planned is not None:
            storage.prepare(planned)
        storage.put({"time": 0}, np.zeros((2048, 2048), np.uint16), {})
        storage.close()
        with tifffile.TiffFile(storage.path) as tiff:
            return tiff.is_bigtiff

    assert bigtiff(PlannedData(axis_sizes={"time": 10})) is False
    assert bigtiff(PlannedData(axis_sizes={"time": 1000})) is True  # 8 GB
    assert bigtiff(PlannedData(axis_sizes={"time": None})) is True  # open-ended
    assert bigtiff(None) is True
    empty = OMETiffStorage(tmp_path, "empty")
    empty.close()
    assert not os.path.exists(empty.path)


def test_engine_and_data_handler_on_the_simulated_microscope(tmp_path, scope):
    contribution = get_contribution(OMETIFF, "storage")
    assert contribution.title == "OME-TIFF" and contribution.available
    assert [p.name for p in contribution.parameters()] == ["pixel_size_um", "bigtiff"]
    scope["Camera"].roi = (0, 0, 64, 48)
    storage = build_storage(OMETIFF, str(tmp_path), "mda", {"z-step_um": 1.0})
    assert isinstance(storage, OMETiffStorage)
    handler = DataHandler(storage)
    events = multi_d_acquisition_events(
        num_time_points=2, z_start=0, z_end=1, z_step=1, channel_group="Channel",
        channels=["DAPI", "FITC"], xy_positions=[[0, 0], [10, 10]], data_handler=handler,
    )  # fmt: skip
    ExecutionEngine.get_instance().submit(events)[-1].await_execution(30)
    handler.await_completion(30)
    assert len(storage) == 16
    tiff, ome = read_ome(storage.path)
    with tiff:
        assert [(s.shape, s.axes) for s in tiff.series] == [((2, 2, 2, 48, 64), "TCZYX")] * 2
        for coords in storage.get_coordinates_list():
            series = tiff.series[coords["position"]]
            c = ("DAPI", "FITC").index(coords["channel"])
            np.testing.assert_array_equal(
                series.asarray()[coords["time"], c, coords["z"]], storage.get_data(coords)
            )
    pixels = ome.images[1].pixels
    assert [c.name for c in pixels.channels] == ["DAPI", "FITC"]
    assert pixels.physical_size_x == 0.65 and pixels.physical_size_z == 1.0  # the camera's
    assert [(p.the_t, p.the_c, p.the_z) for p in pixels.planes][:3] == [
        (0, 0, 0),
        (0, 0, 1),
        (0, 1, 0),
    ]
    assert pixels.planes[0].exposure_time is not None and pixels.planes[0].delta_t is not None


def test_cli_acquire_writes_an_ome_tiff(tmp_path):
    out = io.StringIO()
    argv = [
        "acquire", "--storage", OMETIFF, "--time", "2", "--z", "0:2:1", "--channels",
        "DAPI,FITC", "--exposure", "0", "--out", str(tmp_path), "--name", "cli",
    ]  # fmt: skip
    assert main(argv, stream=out) == 0, out.getvalue()
    path = tmp_path / "cli_1.ome.tif"
    assert str(path) in out.getvalue()
    tiff, ome = read_ome(str(path))
    with tiff:
        assert [(s.shape, s.axes) for s in tiff.series] == [((2, 2, 3, 512, 512), "TCZYX")]
        assert tiff.series[0].asarray().any(axis=(-1, -2)).all()  # every frame is there
    pixels = ome.images[0].pixels
    assert [c.name for c in pixels.channels] == ["DAPI", "FITC"]
    assert pixels.physical_size_x == 0.65 and pixels.physical_size_z == 1.0


FULL_DISK_WRITER = """
import resource, signal, sys
import numpy as np
from exengine.storage import OMETiffStorage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
storage = OMETiffStorage(sys.argv[1], "full", bigtiff=False)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
t = 0
try:
    while True:
        storage.put({"time": t}, np.full((128, 128), t + 1, np.uint16), {})
        t += 1
except OSError as error:
    print("failed", t, error.errno, flush=True)
try:
    storage.put({"time": t + 1}, np.ones((128, 128), np.uint16), {})
except OSError as error:
    print("refused", "stores no more frames" in str(error), flush=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # room again
storage.close()
print(storage.path, flush=True)
"""


def test_a_write_that_fails_is_cut_off_and_the_stored_frames_finish(tmp_path):
    """A real EFBIG (RLIMIT_FSIZE) from the kernel in a subprocess, part-way through a page."""
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    failed, refused, path = done.stdout.splitlines()
    _, stored, code = failed.split()
    assert int(code) == 27 and refused == "refused True"  # EFBIG
    tiff, _ = read_ome(path)
    with tiff:
        assert len(tiff.pages) == int(stored) > 20
        assert [int(frame[0, 0]) for frame in tiff.series[0].asarray()] == list(
            range(1, int(stored) + 1)
        )


CRASH_WRITER = """
import sys
import numpy as np
from exengine.data import PlannedData
from exengine.storage import OMETiffStorage
storage = OMETiffStorage(sys.argv[1], "crash", {"z-step_um": 2.0})
storage.prepare(PlannedData({"time": None, "channel": 2}, {"channel": ("GFP", "DAPI")}))
print(storage.path, flush=True)
for t in range(100000):
    for c, channel in enumerate(("DAPI", "GFP")):
        frame = np.full((512, 512), (1 + 10 * t + c) % 65536, np.uint16)
        storage.put({"time": t, "channel": channel}, frame, {"t": t, "PixelSizeUm": 0.5})
        print(t, channel, flush=True)
"""


def test_sigkill_leaves_every_stored_frame_readable_and_repair_writes_the_ome_xml(
    tmp_path, sigkill_after_lines
):
    lines = sigkill_after_lines(CRASH_WRITER, str(tmp_path), lines=40)
    path, stored = lines[0], [line.split() for line in lines[1:]]
    # a plain multi-page TIFF: every frame reported stored is a whole page, no OME-XML yet
    with tifffile.TiffFile(path) as tiff:
        assert not tiff.is_ome and tiff.pages.first.description == PLACEHOLDER
        frames = tiff.series[0].asarray()
        assert len(frames) >= len(stored)
        for n, (t, channel) in enumerate(stored):
            assert frames[n][0, 0] == 1 + 10 * int(t) + ("DAPI", "GFP").index(channel)
            assert (
                f'"coords": {{"time": {t}, "channel": "{channel}"}}'
                in tiff.pages[n].tags[RECORD_TAG].value
            )
    count = repair(path)
    assert count >= len(stored)
    tiff, ome = read_ome(path)
    with tiff:
        assert len(tiff.pages) == count
        data = tiff.series[0].asarray()
        assert tiff.series[0].axes == "TCYX" and data.shape[:2] == ((count + 1) // 2, 2)
        for t, channel in stored:  # channels in the planned order
            value = 1 + 10 * int(t) + ("DAPI", "GFP").index(channel)
            assert (data[int(t), ("GFP", "DAPI").index(channel)] == value).all()
    pixels = ome.images[0].pixels
    assert [c.name for c in pixels.channels] == ["GFP", "DAPI"]
    assert pixels.physical_size_x == 0.5
    assert repair(path) == count  # a finished file is left as it is


def info(path: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(["info", path], stream=out), out.getvalue()


def test_info_summarises_a_finished_ome_tiff(tmp_path):
    summary = {"z-step_um": 0.5}
    with OMETiffStorage(tmp_path, "info", summary, pixel_size_um=0.325) as storage:
        storage.prepare(
            PlannedData({"position": 2, "channel": 2, "z": 3}, {"channel": ("FITC", "DAPI")})
        )
        for position in ("B", "A"):
            for channel in ("DAPI", "FITC"):
                for z in range(3):
                    coords = {"position": position, "channel": channel, "z": z}
                    metadata = {"ElapsedTime-ms": 10.0 * len(storage)}
                    storage.put(coords, np.zeros((6, 8), np.uint16), metadata)
        storage.annotate({"FramesDropped": 1, "DroppedCoordinates": [{"z": 3}]})
    status, text = info(storage.path)
    assert status == 0, text
    assert (
        f"Dataset: {storage.path}\nFormat: OME-TIFF\nFrames: 12\nFrame: 6 x 8 uint16\n"
        "Pixel size: 0.325 µm; z step: 0.5 µm\nAxes:\n  position: 2 (B, A)\n"
        "  channel: 2 (FITC, DAPI)\n  z: 3 (0, 1, 2)\n"
    ) in text  # channels in the planned order, positions as they came
    assert "First/last timestamps: 0.0 ms / 110.0 ms" in text
    assert "Dropped by the camera: 1 frames" in text  # what annotate added, from the OME-XML
    assert "Not finished" not in text
    size = float(text.split("Size on disk: ")[1].split(" MB")[0])
    assert size == round(os.stat(storage.path).st_blocks * 512 / 1024**2, 1)
    (tmp_path / "other.ome.tif").write_bytes(b"not a TIFF")
    tifffile.imwrite(tmp_path / "theirs.ome.tif", np.zeros((2, 4, 4), np.uint8), ome=True)
    assert main(["info", str(tmp_path / "other.ome.tif")], stream=io.StringIO()) == 2
    assert main(["info", str(tmp_path / "theirs.ome.tif")], stream=io.StringIO()) == 2


def test_info_and_the_reader_on_a_sigkilled_ome_tiff(tmp_path, sigkill_after_lines):
    lines = sigkill_after_lines(CRASH_WRITER, str(tmp_path), lines=12)
    path, stored = lines[0], [line.split() for line in lines[1:]]
    status, text = info(path)
    assert status == 0, text
    frames = int(text.split("Frames: ")[1].split()[0])
    assert frames >= len(stored)
    assert "Format: OME-TIFF\n" in text and "Frame: 512 x 512 uint16\n" in text
    assert "Pixel size: 0.5 µm; z step: 2 µm" in text  # the first frame's; the summary's
    assert f"  time: {(frames + 1) // 2} (0, 1, 2, " in text
    assert "  channel: 2 (GFP, DAPI)\n" in text  # the planned order, from the first page's record
    assert "Not finished: no OME-XML yet; every page written reads (run repair to write it" in text
    assert "First/last timestamps" not in text  # its frames record none
    layers = {kwargs["name"]: (data, kwargs) for data, kwargs, _ in get_reader(path)(path)}
    name = os.path.basename(path)
    assert list(layers) == [f"{name} GFP", f"{name} DAPI"]
    data, kwargs = layers[f"{name} DAPI"]
    assert kwargs["axis_labels"] == ["time", "y", "x"] and kwargs["scale"] == [1.0, 0.5, 0.5]
    for t, channel in stored:
        if channel == "DAPI":
            assert (np.asarray(data[int(t)]) == 1 + 10 * int(t)).all()
    repair(path)
    status, text = info(path)
    assert status == 0 and "Not finished" not in text and f"Frames: {frames}\n" in text
    assert len(read_ometiff(path)) == 2
