"""OME-Zarr storage in a local folder: chunks complete or absent after disk full, datasets never
reused, crash-consistent reopening; and reading datasets back (``OMEZarrDataset``)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import zarr

from exengine import ExecutionEngine
from exengine.data import DataHandler, PlannedData
from exengine.kernel.data_handler import DataHandlerError
from exengine.notifications import DataStoredNotification
from exengine.storage import OMEZarrStorage
from exengine.storage.omezarr_reader import OMEZarrDataset

SHAPE = (64, 64)


def frame(t: int, c: int = 0) -> np.ndarray:
    return np.full(SHAPE, 1 + 10 * t + c, np.uint16)


def big_frame(t: int) -> np.ndarray:
    """A frame large enough to go to a writer thread (``AT_ONCE_BELOW_BYTES``)."""
    return np.full((1024, 1024), 1 + 10 * t, np.uint16)


def chunk_path(storage: OMEZarrStorage, t: int) -> str:
    return os.path.join(storage.path, "0", "c", str(t), "0", "0")


def assert_readable(
    path: str, stored: list[dict], values: dict[int, int], whole_chunks: bool = True
) -> None:
    """The whole array reads, every frame in ``stored`` holds its pixels (``values[t]``), no
    temporary file is left and (``whole_chunks``, uncompressed) every chunk file is a whole
    frame."""
    whole = zarr.open_group(path, mode="r")["0"][...]
    dataset = OMEZarrDataset(path)
    assert sorted(dict(c)["time"] for c in dataset.coordinates()) == sorted(
        c["time"] for c in stored
    )
    for coords in stored:
        assert whole[coords["time"]][0, 0] == values[coords["time"]]
        np.testing.assert_array_equal(dataset.read_frame(coords), whole[coords["time"]])
    for folder, _, files in os.walk(path):
        assert not [f for f in files if f.endswith(".partial")], folder
        if whole_chunks and os.path.basename(os.path.dirname(os.path.dirname(folder))) == "c":
            assert all(
                os.path.getsize(os.path.join(folder, f)) == np.prod(SHAPE) * 2 for f in files
            )


def test_enospc_from_the_write_leaves_no_chunk_and_keeps_every_stored_frame(tmp_path):
    """The kernel's own ENOSPC (a write to /dev/full, where the chunk's temporary file is about to
    go)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    storage = OMEZarrStorage(tmp_path, "full")
    for t in range(3):
        storage.put({"time": t}, frame(t), {"t": t})
    os.makedirs(os.path.dirname(chunk_path(storage, 3)))
    os.symlink("/dev/full", chunk_path(storage, 3) + ".partial")
    with pytest.raises(
        OSError, match=r"Cannot store the frame at \{'time': 3\}.*No space left"
    ) as failure:
        storage.put({"time": 3}, frame(3), {"t": 3})
    assert failure.value.errno == errno.ENOSPC
    assert {"time": 3} not in storage and len(storage) == 3
    assert not os.path.lexists(chunk_path(storage, 3)) and not os.path.lexists(
        chunk_path(storage, 3) + ".partial"
    )
    # the disk has room again: the next frame is stored
    storage.put({"time": 4}, frame(4), {"t": 4})
    storage.finish()
    # trimmed to the frames stored
    assert zarr.open_group(storage.path, mode="r")["0"].shape == (
        5,
        *SHAPE,
    )
    assert_readable(
        storage.path, [{"time": t} for t in (0, 1, 2, 4)], {t: 1 + 10 * t for t in range(5)}
    )
    # the failed frame: absent
    assert OMEZarrDataset(storage.path).read_frame({"time": 3}).max() == 0


def test_a_metadata_document_that_hits_a_full_disk_leaves_no_temporary_file(tmp_path):
    """A collection's ``zarr.json`` documents go through the same whole-or-absent write as chunks:
    on ENOSPC neither the document nor its temporary file stays."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux) for a real ENOSPC")
    from exengine.storage.omezarr_store import write_files

    target = tmp_path / "2" / "zarr.json"
    target.parent.mkdir()
    os.symlink("/dev/full", str(target) + ".partial")
    with pytest.raises(OSError) as failure:
        write_files(str(tmp_path), {"2/zarr.json": b"{}"})
    assert failure.value.errno == errno.ENOSPC
    assert os.listdir(target.parent) == []


@pytest.fixture
def small_tmpfs(mount_tmpfs):
    """A 2 MB tmpfs, for a disk that really fills up."""
    return mount_tmpfs("2m")


@pytest.mark.parametrize("compress", [False, True])
def test_disk_full_on_a_real_tmpfs_loses_no_stored_frame(small_tmpfs, compress):
    stored: list[dict] = []
    ExecutionEngine.get_instance().subscribe_to_notifications(
        lambda n: stored.append(dict(n.payload)), DataStoredNotification
    )
    storage = OMEZarrStorage(small_tmpfs, "full", compress=compress)
    handler = DataHandler(storage)
    rng = np.random.default_rng(0)
    values = {}
    with pytest.raises(DataHandlerError, match="No space left"):
        for t in range(400):  # 400 x 8 KB frames of noise cannot fit in 2 MB
            data = rng.integers(0, 65535, SHAPE, dtype=np.uint16)
            data[0, 0] = values[t] = 1 + t
            handler.put({"time": t}, data, {"t": t}, timeout=30)
        handler.await_completion(30)  # finishes the storage (trimming may fail too: no space)
    with pytest.raises(DataHandlerError, match="No space left"):
        handler.await_completion(30)  # the storage is finished
    ExecutionEngine.get_instance().shutdown()  # delivers every notification published
    assert 0 < len(stored) == handler.frames_stored == len(storage) < 400
    assert_readable(storage.path, stored, values, whole_chunks=not compress)


def test_new_datasets_never_reuse_a_name_even_when_made_at_once(tmp_path):
    (tmp_path / "run_1.ome.zarr").mkdir()  # anything there, even empty, is kept
    made: list[str] = []
    barrier = threading.Barrier(4, timeout=10)

    def make() -> None:
        barrier.wait()
        made.append(OMEZarrStorage(tmp_path, "run").path)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(os.path.basename(p) for p in made) == [f"run_{n}.ome.zarr" for n in (2, 3, 4, 5)]
    assert os.listdir(tmp_path / "run_1.ome.zarr") == []


CRASH_WRITER = """
import sys
import numpy as np
from exengine.storage import OMEZarrStorage
storage = OMEZarrStorage(sys.argv[1], "crash")
print(storage.path, flush=True)
for t in range(100000):
    for c, channel in enumerate(("DAPI", "GFP")):
        frame = np.full((64, 64), 1 + 10 * t + c, np.uint16)
        storage.put({"time": t, "channel": channel}, frame, {"t": t})
        print(t, channel, flush=True)
"""


def test_sigkill_mid_run_leaves_a_dataset_that_opens_with_every_stored_frame(
    tmp_path, sigkill_after_lines
):
    lines = sigkill_after_lines(CRASH_WRITER, str(tmp_path), lines=40)
    path, stored = lines[0], [line.split() for line in lines[1:]]
    dataset = OMEZarrDataset(path)
    assert dataset.finished is False
    channels = ("DAPI", "GFP")
    for t, channel in stored:
        coords = {"time": int(t), "channel": channel}
        assert dataset.read_frame(coords)[0, 0] == 1 + 10 * int(t) + channels.index(channel)
        assert dataset.read_metadata(coords) == {"t": int(t)}
    # the whole array reads
    assert zarr.open_group(path, mode="r")["0"][...].shape[1:] == (
        2,
        64,
        64,
    )


CRASH_HANDLER = """
import sys
import numpy as np
from exengine import ExecutionEngine
from exengine.data import DataHandler
from exengine.notifications import DataStoredNotification
from exengine.storage import OMEZarrStorage
storage = OMEZarrStorage(sys.argv[1], "crash")
print(storage.path, flush=True)
ExecutionEngine.get_instance().subscribe_to_notifications(
    lambda n: print(n.payload["time"], flush=True), DataStoredNotification
)
handler = DataHandler(storage)
for t in range(100000):
    handler.put({"time": t}, np.full((1024, 1024), 1 + t % 60000, np.uint16), {"t": t})
"""


def test_sigkill_while_a_handler_writes_frames_at_once_keeps_every_frame_reported_stored(
    tmp_path, sigkill_after_lines
):
    lines = sigkill_after_lines(CRASH_HANDLER, str(tmp_path), lines=60)
    path, stored = lines[0], [int(line) for line in lines[1:]]
    dataset = OMEZarrDataset(path)
    listed = {dict(c)["time"] for c in dataset.coordinates()}
    assert set(stored) <= listed
    for t in listed:  # every listed frame whole, with its own metadata
        frame_read = dataset.read_frame({"time": t})
        assert frame_read.shape == (1024, 1024) and (frame_read == 1 + t).all()
        assert dataset.read_metadata({"time": t}) == {"t": t}


def test_a_handler_writes_two_local_frames_at_once(tmp_path, monkeypatch):
    """Locally, chunks are files of their own: a ``DataHandler`` keeps two writes of large frames
    going (the first chunk write waits here until a second one has started; one at a time, it would
    time out); small frames, and ``writes_in_flight=1``, are written one at a time."""
    from exengine.storage import omezarr_local

    write_for_real = omezarr_local.write_chunk_file
    both_started = threading.Barrier(2, timeout=20)
    at_once, most = [0], [0]
    lock = threading.Lock()

    def write_chunk_file(target: str, data: np.ndarray) -> None:
        with lock:
            at_once[0] += 1
            most[0] = max(most[0], at_once[0])
        try:
            if data[0, 0] in (1, 11):  # frames 0 and 1
                both_started.wait()
            write_for_real(target, data)
        finally:
            with lock:
                at_once[0] -= 1

    monkeypatch.setattr(omezarr_local, "write_chunk_file", write_chunk_file)
    storage = OMEZarrStorage(tmp_path, "pair")
    assert storage.max_writes_in_flight == 2
    handler = DataHandler(storage)
    for t in range(20):
        handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert most[0] == 2 and handler.frames_stored == 20
    dataset = OMEZarrDataset(storage.path)
    for t in range(20):
        assert (dataset.read_frame({"time": t}) == 1 + 10 * t).all()
    with open(os.path.join(storage.path, "frame_metadata.jsonl")) as f:
        assert sorted(json.loads(line)["metadata"]["t"] for line in f) == list(range(20))
    assert not [n for _, _, names in os.walk(storage.path) for n in names if ".partial" in n]

    most[0] = 0
    handler = DataHandler(OMEZarrStorage(tmp_path, "small"))
    for t in range(2, 12):
        handler.put({"time": t}, frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert most[0] == 1 and handler.frames_stored == 10

    one = OMEZarrStorage(tmp_path, "one", writes_in_flight=1)
    assert one.max_writes_in_flight == 1
    most[0] = 0
    handler = DataHandler(one)
    for t in range(2, 6):
        handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert most[0] == 1 and len(one) == 4


AT_EXIT = """
import atexit, sys, time
import numpy as np
from exengine.data import DataHandler, PlannedData
from exengine.storage import OMEZarrStorage
storage = OMEZarrStorage(sys.argv[1], "exit", timeout_s=2)
print(storage.path, flush=True)
handler = DataHandler(storage)
handler.prepare(PlannedData({"time": 6}, frame_shape=(1024, 1024), dtype="uint16"))
handler.put({"time": 0}, np.full((1024, 1024), 1, np.uint16), {"t": 0})
while handler.frames_stored < 1:  # its array made while zarr can still write
    time.sleep(0.01)

def at_exit():  # as the engine runs events still queued when a script ends
    for t in range(1, 6):
        handler.put({"time": t}, np.full((1024, 1024), 1 + t, np.uint16), {"t": t}, timeout=10)
    try:
        handler.await_completion(30)
    except Exception:
        pass  # zarr itself cannot trim the array this late
    print("stored", handler.frames_stored, flush=True)

atexit.register(at_exit)
"""


def test_frames_put_while_python_exits_are_still_stored(tmp_path):
    """At exit no writer thread can start: the frames are written at once instead (before, they
    failed, and finishing waited 3 x timeout_s for writes that never started)."""
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    path, stored = done.stdout.split()[0], done.stdout.split()[-1]
    assert stored == "6", done.stdout + done.stderr
    dataset = OMEZarrDataset(path)
    for t in range(6):
        assert (dataset.read_frame({"time": t}) == 1 + t).all()
        assert dataset.read_metadata({"time": t}) == {"t": t}


def test_a_finish_that_times_out_lets_go_of_the_dataset(tmp_path, monkeypatch):
    """A write that outlasts finish's wait fails (the frame absent), and the dataset is let go of:
    its records file closed and unlocked, so it can be resumed at once."""
    from exengine.storage import omezarr_local
    from exengine.storage.omezarr_resume import resume_omezarr

    write_for_real, released = omezarr_local.write_chunk_file, threading.Event()

    def stuck_write(target: str, data: np.ndarray) -> None:
        if data[0, 0] == big_frame(1)[0, 0]:
            assert released.wait(20)
        write_for_real(target, data)

    monkeypatch.setattr(omezarr_local, "write_chunk_file", stuck_write)
    storage = OMEZarrStorage(tmp_path, "stuck", timeout_s=0.2)
    storage.put({"time": 0}, big_frame(0), {"t": 0})
    outcome: list = []
    storage.start_put({"time": 1}, big_frame(1), {"t": 1}, outcome.append)
    with pytest.raises(OSError, match="1 frames were still being written") as failure:
        storage.finish()
    assert failure.value.errno == errno.ETIMEDOUT
    resumed = resume_omezarr(storage.path)  # not "being written by another process"
    released.set()
    deadline = time.monotonic() + 20
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcome and "the dataset was finished" in str(outcome[0])
    assert {"time": 1} not in storage and not os.path.exists(chunk_path(storage, 1))
    assert resumed.get_coordinates_list() == [{"time": 0}]
    resumed.finish()


def test_dataset_reader_opens_other_ome_zarr_images(tmp_path):
    """An NGFF image written by zarr alone (no exengine records): indexed axes, omero channel
    labels."""
    group = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    array = group.create_array("s0", shape=(2, 3, 8, 8), chunks=(1, 1, 8, 8), dtype="uint8")
    array[...] = np.arange(6, dtype=np.uint8).reshape(2, 3, 1, 1)
    group.attrs["ome"] = {
        "version": "0.5",
        "omero": {"channels": [{"label": "a"}, {"label": "b"}]},
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "z", "type": "space"},
                    {"name": "y", "type": "space"},
                    {"name": "x", "type": "space"},
                ],
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 0.5, 0.5]}],
                    }
                ],
            }
        ],
    }
    dataset = OMEZarrDataset(tmp_path / "other.zarr")
    assert dataset.finished is None and dataset.channel_axis == "c"
    assert dataset.axes == {"c": ["a", "b"], "z": [0, 1, 2]} and len(dataset.coordinates()) == 6
    assert dataset.read_frame({"c": "b", "z": 2})[0, 0] == 5 and dataset.scale["z"] == 2
    with pytest.raises(KeyError, match="No c 'GFP'"):
        dataset.read_frame({"c": "GFP", "z": 0})
    with pytest.raises(ValueError, match="not an OME-Zarr dataset"):
        OMEZarrDataset(tmp_path)


def test_local_folder_refuses_store_settings_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="apply to store URLs"):
        OMEZarrStorage(tmp_path, "run", storage_options={"endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(ValueError, match="apply to store URLs"):
        OMEZarrStorage(tmp_path, "run", store="obstore")
    with pytest.raises(ValueError, match="plain folder name"):
        OMEZarrStorage(tmp_path, "a/b")
    with pytest.raises(ValueError, match="non-negative"):
        OMEZarrStorage(tmp_path, str(uuid.uuid4())).put({"time": -1}, frame(0), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in tmp_path.iterdir() if p.name.endswith(".ome.zarr")
    )


def test_one_axis_holds_either_indices_or_labels(tmp_path):
    """time=0 and time='a' would both be index 0 of the time axis: the second is refused, nothing
    lost."""
    storage = OMEZarrStorage(tmp_path, "mixed")
    storage.put({"time": 0, "channel": 5}, frame(0), {})
    with pytest.raises(
        ValueError, match=r"Axis 'time' of this OME-Zarr array holds indices \(ints\); 'a'"
    ):
        storage.put({"time": "a", "channel": 5}, frame(1), {})
    storage.put({"time": 1, "channel": "GFP"}, frame(1), {})  # channel values are always labels
    storage.finish()
    dataset = OMEZarrDataset(storage.path)
    assert dataset.axes == {"time": [0, 1], "channel": [5, "GFP"]}
    assert (
        dataset.read_frame({"time": 0, "channel": 5})[0, 0] == 1 and len(dataset.coordinates()) == 2
    )


def test_told_the_plan_the_array_is_made_at_its_size_with_channels_in_planned_order(tmp_path):
    """No growing and trimming when the plan is known: the array has its final shape from the first
    frame, channel indices follow the plan (not the order frames arrive in), and an open-ended axis
    still grows; a run stopped early is trimmed to what it stored."""
    planned = PlannedData(
        axis_sizes={"time": None, "channel": 2, "z": 3},
        axis_values={"channel": ("DAPI", "FITC")},
        frame_shape=SHAPE,
    )
    storage = OMEZarrStorage(tmp_path, "planned")
    handler = DataHandler(storage)
    handler.prepare(planned)
    handler.put({"time": 0, "channel": "FITC", "z": 0}, np.full(SHAPE, 7, np.uint16), {})
    deadline = time.monotonic() + 10
    while handler.frames_stored < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    array = zarr.open_group(storage.path, mode="r")["0"]
    assert array.shape == (1, 2, 3, *SHAPE)  # time is open-ended: it grows
    assert array[0, 1, 0, 0, 0] == 7  # FITC is the plan's second channel
    for t in range(3):
        handler.put({"time": t, "channel": "DAPI", "z": 1}, np.full(SHAPE, t, np.uint16), {})
    handler.await_completion(30)
    array = zarr.open_group(storage.path, mode="r")["0"]
    assert array.shape == (3, 2, 2, *SHAPE)  # trimmed: no frame at z 2
    channels = zarr.open_group(storage.path, mode="r").attrs["ome"]["omero"]["channels"]
    assert [c["label"] for c in channels] == ["DAPI", "FITC"]


def test_a_run_stopped_before_a_planned_channel_lists_only_the_channels_it_stored(tmp_path):
    planned = PlannedData(
        axis_sizes={"time": 4, "channel": 2},
        axis_values={"channel": ("DAPI", "FITC")},
        frame_shape=SHAPE,
    )
    storage = OMEZarrStorage(tmp_path, "stopped")
    handler = DataHandler(storage)
    handler.prepare(planned)
    handler.put({"time": 0, "channel": "DAPI"}, np.full(SHAPE, 1, np.uint16), {})
    handler.await_completion(30)
    group = zarr.open_group(storage.path, mode="r")
    assert group["0"].shape == (1, 1, *SHAPE)
    assert [c["label"] for c in group.attrs["ome"]["omero"]["channels"]] == ["DAPI"]
    assert group.attrs["exengine"]["axis_values"] == {"channel": ["DAPI"]}
    assert OMEZarrDataset(storage.path).read_frame({"time": 0, "channel": "DAPI"}).max() == 1


def test_a_first_frame_unlike_the_plan_is_stored_as_it_comes(tmp_path):
    planned = PlannedData(axis_sizes={"time": 5}, frame_shape=(4, 4))
    storage = OMEZarrStorage(tmp_path, "unlike")
    handler = DataHandler(storage)
    handler.prepare(planned)
    for t in range(2):
        handler.put({"time": t}, np.full(SHAPE, t + 1, np.uint16), {})
    handler.await_completion(30)
    assert zarr.open_group(storage.path, mode="r")["0"].shape == (2, *SHAPE)
    assert OMEZarrDataset(storage.path).read_frame({"time": 1}).max() == 2


@pytest.mark.parametrize("backend", ["omezarr", "ndtiff"])
def test_nan_and_infinity_in_metadata_are_saved_as_strict_json_nulls(tmp_path, backend):
    from exengine.storage import NDTiffStorage

    storage = (
        OMEZarrStorage(tmp_path, "nan") if backend == "omezarr" else NDTiffStorage(tmp_path, "nan")
    )
    handler = DataHandler(storage)
    metadata = {
        "Temperature": float("nan"),
        "Limits": [1.0, float("inf"), -float("inf")],
        "Ok": 2.5,
    }
    handler.put({"time": 0}, np.zeros(SHAPE, np.uint16), metadata)
    handler.await_completion(30)
    assert storage.get_metadata({"time": 0}) == {
        "Temperature": None,
        "Limits": [1.0, None, None],
        "Ok": 2.5,
    }
    for path in tmp_path.rglob("*.json*"):
        text = path.read_text(errors="replace")
        json.loads(
            text.splitlines()[0] if path.suffix == ".jsonl" else text, parse_constant=_refuse
        )
        assert "NaN" not in text and "Infinity" not in text


def _refuse(name):
    raise ValueError(f"not strict JSON: {name}")


@pytest.mark.parametrize("source", ["plan", "frame", "given"])
def test_the_xy_scale_is_the_cameras_pixel_size(tmp_path, source):
    """Not the storage's own default: the pixel size given, else the plan's (the camera's), else
    the first frame's PixelSizeUm."""
    storage = OMEZarrStorage(tmp_path, source, pixel_size_um=0.5 if source == "given" else None)
    handler = DataHandler(storage)
    if source == "plan":
        handler.prepare(PlannedData(axis_sizes={"time": 1}, pixel_size_um=0.65))
    metadata = {"PixelSizeUm": 0.325} if source == "frame" else {}
    handler.put({"time": 0}, np.zeros(SHAPE, np.uint16), metadata)
    handler.await_completion(30)
    multiscale = zarr.open_group(storage.path, mode="r").attrs["ome"]["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-2:] == [{"plan": 0.65, "frame": 0.325, "given": 0.5}[source]] * 2


# ------------------------------------------------------------------- positions and tiles: images
def test_positions_are_images_of_a_bioformats2raw_collection(tmp_path):
    """NGFF allows 2-5 axes: frames' other axes (a position, a tile's row and column) pick one image
    per combination of their values, ``0``, ``1``, ... in the order they first come."""
    storage = OMEZarrStorage(tmp_path, name="run", pixel_size_um=0.5)
    handler = DataHandler(storage)
    for t in range(3):
        for position in ("A1", "B2"):
            for channel in ("DAPI", "GFP"):
                for z in range(2):
                    value = 100 * t + 10 * z + (position == "B2")
                    handler.put(
                        {"time": t, "position": position, "channel": channel, "z": z},
                        np.full((8, 6), value, np.uint16),
                        {"t": t},
                    )
    handler.await_completion(30)
    group = zarr.open_group(storage.path, mode="r")
    assert group.attrs["ome"] == {"version": "0.5", "bioformats2raw.layout": 3}
    assert group["OME"].attrs["ome"]["series"] == ["0", "1"]
    assert group.attrs["exengine"]["image_axes"] == ["position"]
    assert group.attrs["exengine"]["axis_values"]["position"] == ["A1", "B2"]
    image = group["1"]
    array = image["0"]
    assert array.shape == (3, 2, 2, 8, 6) and array.chunks == (1, 1, 1, 8, 6)
    assert array.metadata.dimension_names == ("time", "channel", "z", "y", "x")
    assert array[2, 1, 1, 0, 0] == 211
    multiscale = image.attrs["ome"]["multiscales"][0]
    assert multiscale["name"] == "position=B2"
    assert [a["name"] for a in multiscale["axes"]] == ["time", "channel", "z", "y", "x"]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == 0.5
    assert [c["label"] for c in image.attrs["ome"]["omero"]["channels"]] == ["DAPI", "GFP"]
    lines = (tmp_path / "run_1.ome.zarr" / "frame_metadata.jsonl").read_text().splitlines()
    assert [json.loads(line)["image"] for line in lines[:8]] == ["0"] * 4 + ["1"] * 4
    dataset = OMEZarrDataset(storage.path)
    assert dataset.axis_names == ["position", "time", "channel", "z", "y", "x"]
    assert dataset.axes == {
        "position": ["A1", "B2"],
        "time": [0, 1, 2],
        "channel": ["DAPI", "GFP"],
        "z": [0, 1],
    }
    coords = {"position": "B2", "time": 2, "channel": "GFP", "z": 1}
    assert dataset.read_frame(coords)[0, 0] == 211 and dataset.read_metadata(coords) == {"t": 2}
    with pytest.raises(KeyError, match="No position 'C3'"):
        dataset.read_frame({**coords, "position": "C3"})


def test_every_image_of_a_stopped_run_has_the_acquired_extent(tmp_path):
    """The position reached last has fewer time points: it is given the others' extent (its missing
    frames read as zeros), as readers expect images of one collection alike."""
    storage = OMEZarrStorage(tmp_path, "stopped")
    for t in range(5):
        storage.put({"time": t, "position": 0}, frame(t), {})
    storage.put({"time": 0, "position": 1}, frame(0, 1), {})
    storage.finish()
    group = zarr.open_group(storage.path, mode="r")
    assert [group[p]["0"].shape for p in ("0", "1")] == [(5, *SHAPE)] * 2
    dataset = OMEZarrDataset(storage.path)
    assert dataset.read_frame({"time": 0, "position": 1})[0, 0] == 2
    assert dataset.read_frame({"time": 4, "position": 1}).max() == 0
    assert len(dataset.coordinates()) == 6


def test_a_grid_of_tiles_opens_with_its_row_and_column_axes(tmp_path):
    storage = OMEZarrStorage(tmp_path, "grid")
    for row in range(2):
        for column in range(3):
            storage.put({"row": row, "column": column}, frame(row, column), {})
    storage.finish()
    group = zarr.open_group(storage.path, mode="r")
    assert group["OME"].attrs["ome"]["series"] == [str(n) for n in range(6)]
    assert group["5"]["0"].shape == SHAPE
    assert group["5"].attrs["exengine"]["coords"] == {"row": 1, "column": 2}
    dataset = OMEZarrDataset(storage.path)
    assert dataset.axes == {"row": [0, 1], "column": [0, 1, 2]}
    assert dataset.read_frame({"row": 1, "column": 2})[0, 0] == frame(1, 2)[0, 0]


POSITIONS_CRASH_WRITER = """
import sys
import numpy as np
from exengine.storage import OMEZarrStorage
storage = OMEZarrStorage(sys.argv[1], "crash")
print(storage.path, flush=True)
for t in range(100000):
    for p in range(3):
        frame = np.full((64, 64), 1 + 10 * t + p, np.uint16)
        storage.put({"time": t, "position": f"P{p}"}, frame, {"t": t})
        print(t, p, flush=True)
"""


def test_sigkill_mid_run_with_positions_keeps_every_stored_frame(tmp_path, sigkill_after_lines):
    lines = sigkill_after_lines(POSITIONS_CRASH_WRITER, str(tmp_path), lines=40)
    path, stored = lines[0], [line.split() for line in lines[1:]]
    dataset = OMEZarrDataset(path)
    assert dataset.finished is False and dataset.image_axes == ["position"]
    for t, p in stored:
        coords = {"time": int(t), "position": f"P{p}"}
        assert dataset.read_frame(coords)[0, 0] == 1 + 10 * int(t) + int(p)
        assert dataset.read_metadata(coords) == {"t": int(t)}


def test_dataset_reader_opens_collections_of_other_writers(tmp_path):
    """A bioformats2raw collection written by yaozarrs (as ome-writers writes positions): one
    dataset with a position axis over its series."""
    write = pytest.importorskip("yaozarrs.write.v05", reason="needs yaozarrs (extra 'test')")
    from yaozarrs import DimSpec, v05

    dims = [
        DimSpec(name="t", size=2, type="time", unit="second", scale=2.0),
        DimSpec(name="y", size=4, type="space", unit="micrometer", scale=0.5),
        DimSpec(name="x", size=4, type="space", unit="micrometer", scale=0.5),
    ]
    image = v05.Image(multiscales=[v05.Multiscale.from_dims(dims)])
    builder = write.Bf2RawBuilder(tmp_path / "other.ome.zarr")
    for name in ("Pos0", "Pos1"):
        builder.add_series(name, image, [((2, 4, 4), "uint16")])
    _, arrays = builder.prepare()
    arrays["Pos1/0"][1] = 7
    dataset = OMEZarrDataset(tmp_path / "other.ome.zarr")
    assert dataset.axes == {"position": ["Pos0", "Pos1"], "t": [0, 1]}
    assert dataset.scale["t"] == 2.0 and dataset.scale["x"] == 0.5
    assert dataset.read_frame({"position": "Pos1", "t": 1}).max() == 7
    assert dataset.read_frame({"position": "Pos0", "t": 1}).max() == 0


def test_a_frame_being_written_cannot_be_put_again(tmp_path, monkeypatch):
    """``put`` checks the frames being written by ``start_put`` too (before, only those stored,
    and the frame was written twice): one write per frame, ever."""
    from exengine.storage import omezarr_local

    release, started = threading.Event(), threading.Event()
    write = omezarr_local.write_chunk_file

    def held(target: str, data: np.ndarray) -> None:
        started.set()
        assert release.wait(20)
        write(target, data)

    monkeypatch.setattr(omezarr_local, "write_chunk_file", held)
    storage = OMEZarrStorage(tmp_path, "twice")
    outcome: list[BaseException | None] = []
    storage.start_put({"time": 0}, big_frame(0), {"t": 0}, outcome.append)
    assert started.wait(20)
    with pytest.raises(ValueError, match="already stored or being stored"):
        storage.put({"time": 0}, big_frame(7), {"t": 7})
    release.set()
    storage.finish()
    assert outcome == [None]
    dataset = OMEZarrDataset(storage.path)
    assert [dict(c) for c in dataset.coordinates()] == [{"time": 0}]
    assert (dataset.read_frame({"time": 0}) == 1).all()
    with open(os.path.join(storage.path, "frame_metadata.jsonl")) as f:
        assert [json.loads(line)["metadata"] for line in f] == [{"t": 0}]
