"""Fault injection (issue 17): real faults, clear errors, the right exit status, and no frame lost.

Each test makes something fail the way a machine or a careless user does — a full disk, SIGKILL,
Ctrl-C, a device raising mid-run, bad frames, concurrent producers, hostile input — and checks
that the error says what went wrong, that the exit status is right, and that every frame reported
stored is readable afterwards (with ndstorage, our NDTiff reader and, for finished datasets, a plain
TIFF reader). docs/reliability.rst lists them.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import ndstorage
import numpy as np
import pytest
import tifffile

from exengine import ExecutionEngine
from exengine.acquisition import Acquisition
from exengine.data import DataHandler
from exengine.devices.simulated import SimulatedCamera, SimulatedMicroscope, SimulatedZStage
from exengine.events import multi_d_acquisition_events
from exengine.kernel.data_handler import DataHandlerError
from exengine.notifications import DataStoredNotification
from exengine.storage import NDTiffStorage
from exengine.storage.ndtiff_reader import NDTiffReader

_SCRIPT = shutil.which("exengine", path=os.path.dirname(sys.executable))
EXENGINE = (
    [_SCRIPT]
    if _SCRIPT
    else [sys.executable, "-c", "from napari_exengine.exengine_script import console; console()"]
)


# -------------------------------------------------------------------------------------------
# helpers
def read_every_frame(
    path: str | os.PathLike[str],
) -> dict[frozenset, tuple[np.ndarray, dict[str, Any]]]:
    """Every frame the dataset's index lists, read with ndstorage and with our reader (which must
    agree)."""
    reader = NDTiffReader(path)
    try:
        ours = {
            frozenset(c.items()): (reader.read_frame(c), reader.read_metadata(c))
            for c in reader.coordinates()
        }
    finally:
        reader.close()
    dataset = ndstorage.Dataset(str(path))
    try:
        theirs = {
            frozenset(c.items()): dataset.read_image(**c)
            for c in dataset.get_image_coordinates_list()
        }
    finally:
        dataset.close()
    assert ours.keys() == theirs.keys()
    for key, (frame, _metadata) in ours.items():
        np.testing.assert_array_equal(frame, theirs[key])
    return ours


def tiff_pages(path: str | os.PathLike[str]) -> int:
    """Pages of a finished dataset's TIFF file, read as plain TIFF (a broken IFD chain warns: an
    error here)."""
    (tif,) = Path(path).glob("*.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with tifffile.TiffFile(tif) as file:
            return len(file.pages)


def dataset_in(folder: Path) -> Path:
    (dataset,) = [p for p in folder.iterdir() if (p / "NDTiff.index").is_file()]
    return dataset


def start_acquire(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EXENGINE, "acquire", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_exengine(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXENGINE, *args], capture_output=True, text=True, timeout=timeout)


def wait_for_index(
    folder: Path, frames: int, process: subprocess.Popen[str], timeout: float = 60
) -> Path:
    """Wait until a dataset in ``folder`` has at least ``frames`` index entries (by size); return
    it."""
    min_bytes = frames * 80  # an entry of the CLI's time-lapse takes 60-70 bytes
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index in folder.glob("*/NDTiff.index"):
            if index.stat().st_size >= min_bytes:
                return index.parent
        if process.poll() is not None:
            pytest.fail(f"exengine exited early ({process.returncode}): {process.communicate()[1]}")
        time.sleep(0.05)
    pytest.fail(f"no dataset in {folder} stored {frames} frames within {timeout} s")


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("exengine: ")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], stderr


class StoredLog:
    """Coordinates of every ``DataStoredNotification`` (the frames reported stored), in order."""

    def __init__(self, engine: ExecutionEngine) -> None:
        self.coords: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        engine.subscribe_to_notifications(self._on_stored, DataStoredNotification)

    def _on_stored(self, notification: DataStoredNotification) -> None:
        with self._lock:
            self.coords.append(dict(notification.payload))

    def settled(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The log once ``count`` notifications arrived (they are delivered on their own thread)."""
        deadline = time.monotonic() + timeout
        while len(self.coords) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # and no more than that
        return list(self.coords)


# ----------------------------------------------------------------------------------------- disk
# full
@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 4 MB tmpfs (a real file system that fills up); skipped where mounting is not allowed."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("a tmpfs can only be mounted on Linux")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root): {result.stderr.strip() or result.returncode}"
        )
    try:
        yield mount_point
    finally:
        if (
            subprocess.run(["umount", str(mount_point)], capture_output=True, timeout=30).returncode
            != 0
        ):
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=30)


def fill_up(folder: Path) -> None:
    """Write a file in ``folder`` until its file system is full (another program taking the
    space)."""
    chunk = b"\xff" * 65536
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


@pytest.mark.slow
def test_disk_full_on_a_real_file_system_stops_the_cli_clearly_and_keeps_every_frame(tiny_disk):
    # 6 frames of 512 KB fit the 4 MB disk when the plan is checked; then another program
    # fills it up
    process = start_acquire(
        "--time",
        "6",
        "--interval",
        "0.5",
        "--exposure",
        "0",
        "--out",
        str(tiny_disk),
        "--name",
        "full",
    )
    try:
        wait_for_index(tiny_disk, 1, process)
        fill_up(tiny_disk)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 1, stderr
    assert_one_line_error(stderr, "No space left on device")
    acquired = int(re.findall(r"running: (\d+) of 6 frames", stdout)[-1])
    ((reported, path),) = re.findall(r"\((\d+) frames stored in (.+)\)", stderr)
    frames = read_every_frame(path)
    assert 1 <= int(reported) == len(frames) <= acquired
    # every frame before the fault
    assert sorted(dict(key)["time"] for key in frames) == list(range(len(frames)))
    assert all(frame.shape == (512, 512) for frame, _metadata in frames.values())
    assert tiff_pages(dataset_in(tiny_disk)) == len(frames)  # finished cleanly on the full disk


class _Disk:
    """Free bytes of a simulated disk, shared by the files on it."""

    def __init__(self, free: int) -> None:
        self.free = free


class _OnDisk(io.RawIOBase):
    """A raw file on a :class:`_Disk`, failing as ``write(2)`` does when the disk fills: a write
    stores what fits and returns that count; the next raises ``ENOSPC``. Writes within the data
    already written (over a sparse, preallocated file, or rewriting a header) take no space."""

    def __init__(self, raw: Any, disk: _Disk) -> None:
        super().__init__()
        self._raw, self._disk, self._end = raw, disk, raw.tell()
        self.name = raw.name

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        position = self._raw.tell()
        fits = min(len(view), max(self._end - position, 0) + self._disk.free)
        if fits == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        count = self._raw.write(view[:fits])
        self._disk.free -= max(position + count - max(self._end, position), 0)
        self._end = max(self._end, position + count)
        return count

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._raw.truncate(size)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


class FillingNDTiffStorage(NDTiffStorage):
    """NDTiff storage whose files (image file and index) sit on a :class:`_Disk` from the second
    frame on: the storage's real write path meets ``ENOSPC`` where the disk fills, in pixels,
    metadata or index."""

    def __init__(self, directory: Path, free: int) -> None:
        super().__init__(directory, name="filling")
        self.disk = _Disk(free)

    def _store(self, coords: Any, data: np.ndarray, encoded: bytes, file: Any) -> None:
        for opened in (file.writer.file, self._dataset._index_file) if len(self) else ():
            if not isinstance(opened._raw, _OnDisk):
                opened._raw = _OnDisk(opened._raw, self.disk)
        super()._store(coords, data, encoded, file)


def _frame(t: int) -> np.ndarray:
    return np.full((64, 64), t, np.uint16)


def _bytes_per_frame(tmp_path: Path) -> tuple[int, int]:
    """Disk bytes one 64 x 64 frame takes: (image file, index entry)."""
    storage = FillingNDTiffStorage(tmp_path / "measure", free=10**9)
    storage.put({"time": 0}, _frame(0), {"t": 0})
    index = Path(storage.path, "NDTiff.index")
    before, index_before = storage.disk.free, index.stat().st_size
    storage.put({"time": 1}, _frame(1), {"t": 1})
    entry = index.stat().st_size - index_before
    total = before - storage.disk.free
    storage.close()
    return total - entry, entry


# where the disk fills during the fourth frame: in its image data, at the end of it, or in its
# index entry
FILL_POINTS = {
    "in the pixels": lambda tif, idx: 200,
    "at the end of the image": lambda tif, idx: tif,
    "in the index entry": lambda tif, idx: tif + idx // 2,
    "one byte short": lambda tif, idx: tif + idx - 1,
}


@pytest.mark.parametrize("where", FILL_POINTS)
def test_disk_full_in_the_write_path_fails_the_pipeline_clearly_and_keeps_every_frame(
    engine, tmp_path, where
):
    tif, entry = _bytes_per_frame(tmp_path)
    storage = FillingNDTiffStorage(
        tmp_path, free=2 * (tif + entry) + FILL_POINTS[where](tif, entry)
    )
    log = StoredLog(engine)
    handler = DataHandler(storage)
    with pytest.raises(DataHandlerError, match="No space left on device"):
        for t in range(10):
            handler.put({"time": t}, _frame(t), {"t": t}, timeout=10)
            time.sleep(0.02)  # let the storage keep up, so the failure surfaces at a put
    with pytest.raises(DataHandlerError, match="No space left on device"):
        handler.await_completion(10)
    assert isinstance(handler.error, OSError) and handler.error.errno == errno.ENOSPC
    reported = log.settled(3)
    assert reported == [{"time": 0}, {"time": 1}, {"time": 2}]
    storage.close()
    frames = read_every_frame(storage.path)
    assert sorted(dict(k)["time"] for k in frames) == [0, 1, 2]
    for key, (frame, metadata) in frames.items():
        np.testing.assert_array_equal(frame, _frame(dict(key)["time"]))
        assert metadata == {"t": dict(key)["time"]}
    # the dataset finished cleanly: no part of the failed frame
    assert tiff_pages(storage.path) == 3


@pytest.mark.parametrize("where", FILL_POINTS)
def test_after_disk_full_the_dataset_takes_the_failed_frame_once_space_is_freed(tmp_path, where):
    tif, entry = _bytes_per_frame(tmp_path)
    storage = FillingNDTiffStorage(
        tmp_path, free=2 * (tif + entry) + FILL_POINTS[where](tif, entry)
    )
    for t in range(3):
        storage.put({"time": t}, _frame(t), {"t": t})
    with pytest.raises(OSError) as failure:
        storage.put({"time": 3}, _frame(3), {"t": 3})
    assert failure.value.errno == errno.ENOSPC
    assert {"time": 3} not in storage and not storage.dataset.has_image(time=3)
    storage.disk.free = 10**6  # the user frees space
    for t in range(3, 6):
        storage.put({"time": t}, _frame(t), {"t": t})
    storage.close()
    frames = read_every_frame(storage.path)
    assert sorted(dict(k)["time"] for k in frames) == list(range(6))
    for key, (frame, _metadata) in frames.items():
        np.testing.assert_array_equal(frame, _frame(dict(key)["time"]))
    assert tiff_pages(storage.path) == 6


# ------------------------------------------------------------------------------- killed processes
@pytest.mark.slow
def test_sigkill_mid_run_keeps_every_frame_in_the_index_readable(tmp_path):
    process = start_acquire(
        "--time", "5000", "--exposure", "2", "--out", str(tmp_path), "--name", "killed"
    )
    try:
        dataset = wait_for_index(tmp_path, 40, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    frames = read_every_frame(dataset)
    assert sorted(dict(key)["time"] for key in frames) == list(range(len(frames)))  # no gap
    assert len(frames) >= 40
    for frame, metadata in frames.values():
        assert (
            frame.shape == (512, 512)
            and frame.dtype == np.uint16
            and metadata["Camera"] == "Camera"
        )


@pytest.mark.slow
def test_a_single_sigint_stops_with_exit_130_and_a_finished_dataset(tmp_path):
    process = start_acquire(
        "--time", "5000", "--exposure", "2", "--out", str(tmp_path), "--name", "interrupted"
    )
    try:
        wait_for_index(tmp_path, 20, process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "Stopping after the frame in hand" in stdout
    ((reported, path),) = re.findall(r"Stopped: (\d+) of 5,000 frames stored in (.+)", stdout)
    frames = read_every_frame(path)
    assert int(reported) == len(frames) >= 20
    assert tiff_pages(path) == len(frames)  # finished: the TIFF's chain of images is closed
    (tif,) = Path(path).glob("*.tif")
    # and trimmed to its data (not 4 GB)
    assert tif.stat().st_size < 2 * 512 * 512 * (len(frames) + 1)


def test_sigterm_stops_like_ctrl_c_with_exit_143_and_a_finished_dataset(tmp_path):
    process = start_acquire(
        "--time", "5000", "--exposure", "2", "--out", str(tmp_path), "--name", "terminated"
    )
    try:
        wait_for_index(tmp_path, 20, process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "Terminated: stopping after the frame in hand" in stdout
    ((reported, path),) = re.findall(r"Stopped: (\d+) of 5,000 frames stored in (.+)", stdout)
    frames = read_every_frame(path)
    assert int(reported) == len(frames) >= 20
    assert tiff_pages(path) == len(frames)  # finished


def test_ctrl_c_before_the_acquisition_starts_is_one_line_and_exit_130(tmp_path):
    """The command takes a few tenths of a second to import and check: Ctrl-C then gives one
    line, not a traceback."""
    process = start_acquire("--time", "5", "--out", str(tmp_path), "--name", "early")
    try:
        time.sleep(0.15)  # the interpreter is up, the command still importing
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)
    assert process.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert len(stderr.strip().splitlines()) <= 1


# --------------------------------------------------------------------------------------- devices
class StallingZStage(SimulatedZStage):
    """A z drive whose motor stalls on the third move."""

    def __init__(self, name: str, microscope: SimulatedMicroscope) -> None:
        super().__init__(name, microscope)
        self.moves = 0

    def set_position(self, position: float) -> None:
        self.moves += 1
        if self.moves == 3:
            raise RuntimeError(f"{self.name}: motor stalled moving to z={position} µm")
        super().set_position(position)


def test_a_device_raising_mid_run_fails_the_acquisition_clearly_and_keeps_the_frames(
    engine, tmp_path
):
    scope = SimulatedMicroscope()
    camera = SimulatedCamera("StallCam", scope, width=64, height=48)
    camera.exposure, camera.frame_rate_limit = 0.0, 1000.0
    stage = StallingZStage("StallZ", scope)
    storage = NDTiffStorage(tmp_path, name="stalled")
    handler = DataHandler(storage)
    log = StoredLog(engine)
    events = multi_d_acquisition_events(
        num_time_points=2,
        z_start=0,
        z_end=4,
        z_step=1,
        camera=camera,
        z_device=stage,
        data_handler=handler,
    )
    acquisition = Acquisition(events, handler)
    acquisition.start()
    with pytest.raises(RuntimeError, match=r"StallZ: motor stalled moving to z=2\.0 µm"):
        acquisition.await_completion(30)
    assert not acquisition.is_running()
    assert acquisition.frames_stored == 2
    assert log.settled(2) == [{"time": 0, "z": 0}, {"time": 0, "z": 1}]
    frames = read_every_frame(storage.path)
    assert sorted((dict(k)["time"], dict(k)["z"]) for k in frames) == [(0, 0), (0, 1)]
    assert all(metadata["StageZ-um"] == dict(k)["z"] for k, (_f, metadata) in frames.items())
    assert tiff_pages(storage.path) == 2  # the handler finished the dataset
    assert engine.submit(lambda: "still running").await_execution(5) == "still running"


@pytest.mark.slow
def test_an_scmos_sized_camera_acquires_into_ndtiff(engine, tmp_path):
    scope = SimulatedMicroscope()
    camera = SimulatedCamera("BigCam", scope, width=2304, height=2304)
    camera.exposure, camera.frame_rate_limit = 0.0, 1000.0
    storage = NDTiffStorage(tmp_path, name="scmos")
    handler = DataHandler(storage)
    acquisition = Acquisition(
        multi_d_acquisition_events(num_time_points=3, camera=camera, data_handler=handler), handler
    )
    acquisition.start()
    acquisition.await_completion(60)
    frames = read_every_frame(storage.path)
    assert len(frames) == 3 and all(f.shape == (2304, 2304) for f, _metadata in frames.values())


# -------------------------------------------------------------------------------------- bad frames
BAD_FRAMES = {
    "float frame": (np.zeros((64, 64), np.float32), {}, TypeError, "uint8 or uint16"),
    "frame without pixels": (
        np.zeros((0, 64), np.uint16),
        {},
        ValueError,
        r"without pixels.*\(0, 64\)",
    ),
    "3-D frame": (np.zeros((2, 64, 64), np.uint16), {}, ValueError, "2-D frames"),
    "other shape": (np.zeros((32, 64), np.uint16), {}, ValueError, "share one shape"),
    "metadata that is not JSON": (
        np.zeros((64, 64), np.uint16),
        {"when": object()},
        TypeError,
        "JSON",
    ),
}


@pytest.mark.parametrize("kind", BAD_FRAMES)
def test_a_bad_frame_fails_the_pipeline_clearly_and_nothing_of_it_is_written(
    engine, tmp_path, kind
):
    data, metadata, error, message = BAD_FRAMES[kind]
    storage = NDTiffStorage(tmp_path, name="bad")
    handler = DataHandler(storage)
    for t in range(3):
        handler.put({"time": t}, _frame(t), {"t": t})
    handler.put({"time": 3}, data, metadata)
    with pytest.raises(DataHandlerError) as failure:
        handler.await_completion(10)
    cause = handler.error if isinstance(handler.error, error) else handler.error.__cause__
    assert isinstance(cause, error) and re.search(message, str(cause)) and "'time': 3" in str(cause)
    assert re.search(message, str(failure.value))
    storage.close()
    frames = read_every_frame(storage.path)
    assert sorted(dict(k)["time"] for k in frames) == [0, 1, 2]
    assert tiff_pages(storage.path) == 3


# ---------------------------------------------------------------------------------------- producers
def test_eight_concurrent_producers_into_one_handler_lose_nothing(engine, tmp_path):
    frame_bytes = 64 * 64 * 2
    storage = NDTiffStorage(tmp_path, name="producers")
    # small: producers wait for room
    handler = DataHandler(storage, memory_budget_bytes=16 * frame_bytes)
    log = StoredLog(engine)
    errors: list[BaseException] = []
    start = threading.Barrier(8, timeout=10)

    def produce(k: int) -> None:
        try:
            start.wait()
            for i in range(40):
                handler.put(
                    {"producer": k, "time": i},
                    np.full((64, 64), 100 * k + i, np.uint16),
                    {"k": k, "i": i},
                    timeout=30,
                )
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=produce, args=(k,), daemon=True) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a producer is stuck"
    assert not errors, errors
    handler.finish()
    handler.await_completion(60)
    assert handler.frames_stored == 320
    assert handler.peak_bytes_in_flight <= 17 * frame_bytes
    assert len(log.settled(320)) == 320
    frames = read_every_frame(storage.path)
    assert len(frames) == 320
    for key, (frame, metadata) in frames.items():
        k, i = dict(key)["producer"], dict(key)["time"]
        assert metadata == {"k": k, "i": i}
        np.testing.assert_array_equal(frame, np.full((64, 64), 100 * k + i, np.uint16))


# ---------------------------------------------------------------------------------- hostile input
HOSTILE_YAML = 'time: !!python/object/apply:os.system ["touch {marker}"]\n'


def test_hostile_yaml_is_a_one_line_usage_error_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    plan = tmp_path / "plan.yaml"
    plan.write_text(HOSTILE_YAML.format(marker=marker))
    result = run_exengine("acquire", "--file", str(plan), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert_one_line_error(result.stderr, str(plan))
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()
