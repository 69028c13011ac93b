"""NDTiff and NDRAM storage on ndstorage: pitfalls handled, crash safety."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import ndstorage
import numpy as np
import pytest

from exengine.data import DataCoordinates
from exengine.storage import NDRAMStorage, NDTiffStorage
from exengine.storage_backends.ndtiff_and_ndram import NDTiffStorage as Reexported


def test_reexport_and_context_manager(tmp_path):
    assert Reexported is NDTiffStorage
    with NDTiffStorage(tmp_path, name="ctx", summary_metadata={"objective": "20x"}) as storage:
        storage.put({"time": 0, "channel": "DAPI"}, np.ones((4, 5), np.uint16), {"k": 1})
        assert storage.get_data({"channel": "DAPI", "time": 0}).shape == (4, 5)
        assert storage.summary_metadata == {"objective": "20x"}
        assert storage.get_coordinates_list() == [{"time": 0, "channel": "DAPI"}]
    dataset = ndstorage.Dataset(storage.path)
    assert dataset.read_image(time=0, channel="DAPI").shape == (4, 5)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4), np.int16),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros(4, np.uint16),
    ],
)
def test_unsupported_frames_are_refused_before_writing(tmp_path, bad):
    storage = NDTiffStorage(tmp_path)
    with pytest.raises((TypeError, ValueError), match="'time': 0"):
        storage.put({"time": 0}, bad, {})
    assert {"time": 0} not in storage and len(storage) == 0
    storage.put({"time": 0}, np.zeros((4, 4), np.uint16), {})
    assert len(storage) == 1
    storage.close()


def test_non_contiguous_frames_are_stored_losslessly(tmp_path):
    storage = NDTiffStorage(tmp_path)
    base = np.arange(64, dtype=np.uint16).reshape(8, 8)
    storage.put({"time": 0}, base.T, {})
    storage.put({"time": 1}, base[::-1, ::-1], {})
    np.testing.assert_array_equal(storage.get_data({"time": 0}), base.T)
    np.testing.assert_array_equal(storage.get_data({"time": 1}), base[::-1, ::-1])
    with pytest.raises(ValueError, match="share one shape"):
        storage.put({"time": 2}, base[::2, ::2], {})
    assert {"time": 2} not in storage


def test_numpy_metadata_serializes(tmp_path):
    storage = NDTiffStorage(tmp_path)
    storage.put(
        {"time": 0},
        np.zeros((2, 2), np.uint8),
        {
            "exposure": np.float32(1.5),
            "count": np.int64(3),
            "roi": np.array([1, 2]),
            "pair": (1, 2),
        },
    )
    assert storage.get_metadata({"time": 0}) == {
        "exposure": 1.5,
        "count": 3,
        "roi": [1, 2],
        "pair": [1, 2],
    }
    with pytest.raises(TypeError, match="cannot be saved as JSON"):
        storage.put({"time": 1}, np.zeros((2, 2), np.uint8), {"bad": object()})
    assert {"time": 1} not in storage


def test_failed_put_leaves_no_phantom(tmp_path, monkeypatch):
    storage = NDTiffStorage(tmp_path)
    storage.put({"time": 0}, np.zeros((2, 2), np.uint16), {})

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage.dataset.image_files.files[0].writer, "write_image", broken)
    with pytest.raises(OSError):
        storage.put({"time": 1}, np.ones((2, 2), np.uint16), {})
    assert {"time": 1} not in storage
    assert not storage.dataset._write_pending_images
    assert not storage.dataset.has_image(time=1)


def test_duplicate_coordinates_keep_the_first(tmp_path):
    storage = NDTiffStorage(tmp_path)
    storage.put({"time": 0}, np.full((2, 2), 1, np.uint16), {})
    with pytest.raises(ValueError, match="already stored"):
        storage.put(DataCoordinates(time=0), np.full((2, 2), 2, np.uint16), {})
    assert storage.get_data({"time": 0})[0, 0] == 1


def test_existing_dataset_is_never_overwritten(tmp_path):
    first = NDTiffStorage(tmp_path, name="run")
    first.put({"time": 0}, np.full((2, 2), 1, np.uint16), {})
    first.close()
    second = NDTiffStorage(tmp_path, name="run")
    second.put({"time": 0}, np.full((2, 2), 2, np.uint16), {})
    second.close()
    assert first.path != second.path
    assert ndstorage.Dataset(first.path).read_image(time=0)[0, 0] == 1
    with pytest.raises(ValueError, match="folder name"):
        NDTiffStorage(tmp_path, name="a/b")


def test_unwritable_directory_fails_at_construction(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root ignores permissions: use a path below a file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        locked = blocker / "sub"
    with pytest.raises(PermissionError, match="Cannot write"):
        NDTiffStorage(locked)


def _mount_type(path) -> str:
    """The file-system type of ``path`` from the kernel's mount table (longest mount point)."""
    path, best, kind = os.path.realpath(path), "", ""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _device, mount_point, fs_type = line.split()[:3]
            mount_point = mount_point.replace("\\040", " ")
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            # the last, topmost mount of the longest point
            if inside and len(mount_point) >= len(best):
                best, kind = mount_point, fs_type
    return kind


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="space is reserved on Linux only")
def test_space_is_reserved_only_where_it_pays(tmp_path):
    from exengine.storage._preallocate import file_system_reserves

    places = [tmp_path] + [p for p in ("/dev/shm",) if os.path.isdir(p) and os.access(p, os.W_OK)]
    for place in places:
        with open(os.path.join(place, f"probe-{os.getpid()}"), "wb") as probe:
            try:
                expected = _mount_type(place) in {"ext2", "ext3", "ext4", "xfs"}
                assert file_system_reserves(probe.fileno()) is expected, (place, _mount_type(place))
            finally:
                os.remove(probe.name)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="space is reserved on Linux only")
def test_space_reserved_ahead_of_the_writer_is_trimmed_at_finish(tmp_path, monkeypatch):
    from exengine.storage import _preallocate

    # whatever tmp_path is on
    monkeypatch.setattr(_preallocate, "file_system_reserves", lambda fd: True)
    storage = NDTiffStorage(tmp_path, "reserve")
    frames = [np.full((256, 256), t, np.uint16) for t in range(4)]
    for t, frame in enumerate(frames):
        storage.put({"time": t}, frame, {"t": t})
    (image_file,) = storage.dataset.image_files.files
    stack = image_file.writer.file
    position = stack.tell()
    assert image_file.reserver.reserved_to >= position + 32 * 1024**2
    assert os.fstat(stack.fileno()).st_blocks * 512 >= 32 * 1024**2  # really allocated, not a hole
    storage.finish()
    stack_path = stack.name
    assert os.path.getsize(stack_path) == position  # trimmed to the data
    assert os.stat(stack_path).st_blocks * 512 < position + 1024**2
    reopened = ndstorage.Dataset(storage.path)
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(reopened.read_image(time=t), frame)


def test_ndram_storage():
    storage = NDRAMStorage(summary_metadata={"a": np.int32(1)})
    storage.put({"time": 0, "channel": "GFP"}, np.ones((3, 3), np.float32), {"x": np.float64(2)})
    assert {"time": 0, "channel": "GFP"} in storage
    assert storage.get_metadata({"channel": "GFP", "time": 0}) == {"x": 2.0}
    assert storage.summary_metadata == {"a": 1}
    with pytest.raises(TypeError, match="numeric"):
        storage.put({"time": 1}, np.array([["a"]]), {})


@pytest.mark.parametrize("shape", [(0, 512), (512, 0), (0, 0)])
def test_frames_without_pixels_are_refused_before_writing(tmp_path, shape):
    storage = NDTiffStorage(tmp_path, name="empty")
    with pytest.raises(ValueError, match=r"without pixels.*" + re.escape(str(shape))):
        storage.put({"time": 0}, np.zeros(shape, np.uint16), {})
    assert len(storage) == 0 and not storage.dataset.has_image(time=0)
    # the dataset still takes frames
    storage.put({"time": 1}, np.full((4, 6), 7, np.uint16), {"ok": True})
    storage.close()
    reopened = ndstorage.Dataset(storage.path)
    assert [dict(axes) for axes in reopened.get_image_coordinates_list()] == [{"time": 1}]
    np.testing.assert_array_equal(reopened.read_image(time=1), np.full((4, 6), 7, np.uint16))

    ram = NDRAMStorage()
    with pytest.raises(ValueError, match="without pixels"):
        ram.put({"time": 0}, np.zeros(shape, np.uint16), {})
    assert len(ram) == 0 and not ram.dataset.has_image(time=0)


@pytest.mark.parametrize("bad", [np.zeros(5, np.uint16), np.zeros((), np.uint16)])
def test_ndram_refuses_frames_of_fewer_than_two_dimensions(bad):
    ram = NDRAMStorage()
    with pytest.raises(ValueError, match=r"2 or more dimensions.*'time': 0"):
        ram.put({"time": 0}, bad, {})
    assert len(ram) == 0 and not ram.dataset.images


@pytest.mark.parametrize(
    "make", [NDTiffStorage, lambda _directory: NDRAMStorage()], ids=["ndtiff", "ndram"]
)
def test_coordinates_ndstorage_cannot_keep_are_refused_naming_the_axis(tmp_path, make):
    storage = make(tmp_path)
    storage.put({"time": 0, "channel": "DAPI"}, np.ones((2, 2), np.uint16), {})
    with pytest.raises(ValueError, match=r"Axis 'time' holds int values.*the str 'a'"):
        storage.put({"time": "a", "channel": "DAPI"}, np.ones((2, 2), np.uint16), {})
    with pytest.raises(ValueError, match=r"Axis 'channel' holds str values.*the int 3"):
        storage.put({"time": 1, "channel": 3}, np.ones((2, 2), np.uint16), {})
    with pytest.raises(ValueError, match="axis named 'self'"):
        storage.put({"time": 1, "channel": "DAPI", "self": 1}, np.ones((2, 2), np.uint16), {})
    assert len(storage) == 1
    # still takes frames
    storage.put({"time": 1, "channel": "FITC"}, np.ones((2, 2), np.uint16), {})
    assert len(storage) == 2
    storage.close()


CRASH_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from exengine import ExecutionEngine
    from exengine.data import DataHandler
    from exengine.storage import NDTiffStorage
    from exengine.notifications import DataStoredNotification

    storage = NDTiffStorage(sys.argv[1], name="crash")
    print("PATH", storage.path, flush=True)
    engine = ExecutionEngine()
    engine.subscribe_to_notifications(
        lambda n: print("STORED", n.payload["time"], flush=True), DataStoredNotification)
    handler = DataHandler(storage)
    t = 0
    while True:
        frame = np.full((64, 64), t % 65535, np.uint16)
        handler.put({"time": t, "channel": "DAPI"}, frame, {"t": t})
        t += 1
""")


def test_frames_reported_stored_survive_sigkill(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    stored, path = [], None
    deadline = time.monotonic() + 60
    try:
        while len(stored) < 150 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("PATH"):
                path = line.split(" ", 1)[1].strip()
            elif line.startswith("STORED"):
                stored.append(int(line.split()[1]))
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert path and len(stored) >= 150, (
        "the acquisition did not report enough stored frames in time"
    )
    dataset = ndstorage.Dataset(path)
    for t in stored:
        assert dataset.has_image(time=t, channel="DAPI"), (
            f"frame {t} was reported stored but is lost"
        )
        assert dataset.read_image(time=t, channel="DAPI")[0, 0] == t
        assert dataset.read_metadata(time=t, channel="DAPI") == {"t": t}
