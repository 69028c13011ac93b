"""NDTiff writes two large frames at once, into two image files side by side (``ndtiff_files``):
the dataset stays one valid NDTiff dataset whatever happens to a write."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import ndstorage
import numpy as np
import pytest
from ndstorage.ndtiff_index import NDTiffIndexEntry

from exengine.data import DataHandler, DataHandlerError
from exengine.storage import NDTiffStorage, ndtiff_files
from exengine.storage.ndtiff_reader import NDTiffReader

BIG = (1024, 1024)  # 2 MB: large enough to go to a writer thread


def big_frame(t: int) -> np.ndarray:
    return np.full(BIG, 1 + t, np.uint16)


def image_files(path: str) -> list[str]:
    return sorted(name for name in os.listdir(path) if name.endswith(".tif"))


def assert_frames(path: str, times: list[int], shape: tuple[int, int] = BIG) -> None:
    """ndstorage's reader and ours both read every frame in ``times``, whole, with its metadata,
    and nothing else."""
    dataset = ndstorage.Dataset(path)
    reader = NDTiffReader(path)
    try:
        assert sorted(c["time"] for c in reader.coordinates()) == sorted(times)
        for t in times:
            for image in (dataset.read_image(time=t), reader.read_frame({"time": t})):
                assert image.shape == shape and (image == 1 + t).all()
            assert reader.read_metadata({"time": t}) == {"t": t}
            assert dataset.read_metadata(time=t) == {"t": t}
    finally:
        reader.close()
        dataset.close()


class CountingWrites:
    """``ImageFile.write`` counting the writes going at once; frames 0 and 1 each wait until the
    other has started (one at a time, the first would time out)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.both_started = threading.Barrier(2, timeout=20)
        self.at_once = self.most = 0
        self._lock = threading.Lock()
        self._write = ndtiff_files.ImageFile.write
        monkeypatch.setattr(ndtiff_files.ImageFile, "write", lambda *args: self._counted(*args))

    def _counted(self, file, key, image, metadata, then):
        with self._lock:
            self.at_once += 1
            self.most = max(self.most, self.at_once)
        try:
            if dict(key)["time"] in (0, 1) and image.nbytes >= 2 * 1024**2:
                self.both_started.wait()
            return self._write(file, key, image, metadata, then)
        finally:
            with self._lock:
                self.at_once -= 1


def test_a_handler_writes_two_large_frames_at_once_into_two_image_files(tmp_path, monkeypatch):
    writes = CountingWrites(monkeypatch)
    storage = NDTiffStorage(tmp_path, "pair")
    assert storage.max_writes_in_flight == 2
    handler = DataHandler(storage)
    for t in range(20):
        handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert writes.most == 2 and handler.frames_stored == 20
    assert image_files(storage.path) == ["pair_NDTiffStack.tif", "pair_NDTiffStack_1.tif"]
    assert_frames(storage.path, list(range(20)))

    writes.most = 0  # small frames: one at a time, one file
    handler = DataHandler(NDTiffStorage(tmp_path, "small"))
    for t in range(2, 12):
        handler.put({"time": t}, np.full((64, 64), 1 + t, np.uint16), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert writes.most == 1 and handler.frames_stored == 10
    assert image_files(handler.storage.path) == ["small_NDTiffStack.tif"]
    assert_frames(handler.storage.path, list(range(2, 12)), shape=(64, 64))

    writes.most = 0
    one = NDTiffStorage(tmp_path, "one", writes_in_flight=1)
    assert one.max_writes_in_flight == 1
    handler = DataHandler(one)
    for t in range(2, 6):
        handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert writes.most == 1 and image_files(one.path) == ["one_NDTiffStack.tif"]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_writes_in_flight_must_be_a_whole_number_of_one_or_more(tmp_path, bad):
    with pytest.raises(ValueError, match=f"writes_in_flight must be .* got {bad!r}"):
        NDTiffStorage(tmp_path, writes_in_flight=bad)
    assert not os.listdir(tmp_path)


def test_a_full_image_file_is_finished_and_the_next_one_takes_its_place(tmp_path, monkeypatch):
    """ndstorage starts a new file at 4 GB; here a file is full after 3 frames."""
    from ndstorage.ndtiff_file import SingleNDTiffWriter

    def has_space(writer, pixels, metadata):
        return writer.file.tell() < 3 * pixels.nbytes

    monkeypatch.setattr(SingleNDTiffWriter, "has_space_to_write", has_space)
    storage = NDTiffStorage(tmp_path, "full")
    handler = DataHandler(storage)
    for t in range(12):
        handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert len(image_files(storage.path)) >= 4
    for name in image_files(storage.path):  # none over the limit of 3 frames and a bit
        assert os.path.getsize(os.path.join(storage.path, name)) < 4 * big_frame(0).nbytes
    assert_frames(storage.path, list(range(12)))


def test_a_failed_write_in_one_file_leaves_every_other_frame_and_a_valid_dataset(
    tmp_path, monkeypatch
):
    """The disk fills during frame 5's write (whichever file it went to): the frame is absent, the
    handler fails clearly, and every frame stored reads back whole from both files."""
    write = ndtiff_files.DirectFile.write

    def filling(file, data):
        if memoryview(data).nbytes == big_frame(0).nbytes and (np.asarray(data) == 6).all():
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(file, data)

    monkeypatch.setattr(ndtiff_files.DirectFile, "write", filling)
    storage = NDTiffStorage(tmp_path, "fill")
    handler = DataHandler(storage)
    with pytest.raises(DataHandlerError, match="No space left on device"):
        for t in range(10):
            handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
        handler.await_completion(60)
    storage.close()
    stored = [c["time"] for c in storage.get_coordinates_list()]
    assert 5 not in stored and {0, 1, 2, 3, 4} <= set(stored)
    assert_frames(storage.path, stored)


def test_a_frame_being_written_cannot_be_put_again(tmp_path, monkeypatch):
    """``put`` checks the frames being written too (before, only those stored): one write per
    frame, ever."""
    release = threading.Event()
    started = threading.Event()
    write = ndtiff_files.ImageFile.write

    def held(file, key, image, metadata, then):
        started.set()
        assert release.wait(20)
        return write(file, key, image, metadata, then)

    monkeypatch.setattr(ndtiff_files.ImageFile, "write", held)
    storage = NDTiffStorage(tmp_path, "twice")
    outcome: list[BaseException | None] = []
    storage.start_put({"time": 0}, big_frame(0), {"t": 0}, outcome.append)
    assert started.wait(20)
    with pytest.raises(ValueError, match="already stored or being stored"):
        storage.put({"time": 0}, big_frame(7), {"t": 7})
    finishing = threading.Thread(target=storage.finish)  # waits for the write going
    finishing.start()
    finishing.join(0.3)
    assert finishing.is_alive()
    release.set()
    finishing.join(20)
    assert not finishing.is_alive() and outcome == [None]
    assert_frames(storage.path, [0])


CRASH_HANDLER = """
import sys
import numpy as np
from exengine import ExecutionEngine
from exengine.data import DataHandler
from exengine.notifications import DataStoredNotification
from exengine.storage import NDTiffStorage
storage = NDTiffStorage(sys.argv[1], "crash")
print(storage.path, flush=True)
ExecutionEngine.get_instance().subscribe_to_notifications(
    lambda n: print(n.payload["time"], flush=True), DataStoredNotification
)
handler = DataHandler(storage)
for t in range(100000):
    handler.put({"time": t}, np.full((1024, 1024), 1 + t % 60000, np.uint16), {"t": t})
"""


def test_sigkill_while_writing_two_files_keeps_every_frame_reported_and_resumes(
    tmp_path, sigkill_after_lines
):
    lines = sigkill_after_lines(CRASH_HANDLER, str(tmp_path), lines=60)
    path, stored = lines[0], [int(line) for line in lines[1:]]
    assert len(image_files(path)) == 2
    reader = NDTiffReader(path)
    listed = sorted(c["time"] for c in reader.coordinates())
    reader.close()
    assert set(stored) <= set(listed)
    assert_frames(path, listed)

    resumed = NDTiffStorage.resume(path)  # each file cut back to its last frame, new ones added
    handler = DataHandler(resumed)
    more = [t for t in range(max(listed) + 10) if t not in listed][:6]
    for t in more:
        handler.put({"time": t}, big_frame(t), {"t": t}, timeout=30)
    handler.await_completion(60)
    assert_frames(path, listed + more)


AT_EXIT = """
import atexit, sys
import numpy as np
from exengine.data import DataHandler
from exengine.storage import NDTiffStorage
storage = NDTiffStorage(sys.argv[1], "exit")
print(storage.path, flush=True)
handler = DataHandler(storage)

def at_exit():  # as the engine runs events still queued when a script ends
    for t in range(6):
        handler.put({"time": t}, np.full((1024, 1024), 1 + t, np.uint16), {"t": t}, timeout=10)
    handler.await_completion(30)
    print("stored", handler.frames_stored, flush=True)

atexit.register(at_exit)
"""


def test_frames_put_while_python_exits_are_still_stored(tmp_path):
    """At exit no writer thread can start: the frames are written at once instead."""
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    path, stored = done.stdout.split()[0], done.stdout.split()[-1]
    assert stored == "6", done.stdout + done.stderr
    assert_frames(path, list(range(6)))


def test_a_writer_thread_that_cannot_start_still_writes_each_frame_once(tmp_path, monkeypatch):
    """Starting a thread can fail (a process at its thread or memory limit) after the write was
    queued: the write runs at once instead, and the queued copy, run later, does nothing (before,
    it wrote the frame a second time over the next frame's bytes)."""
    start, failed = threading.Thread.start, []

    def start_once_failing(thread):
        if thread.name.startswith("ndtiff-images") and not failed:
            failed.append(thread.name)
            raise RuntimeError("can't start new thread")
        return start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_once_failing)
    storage = NDTiffStorage(tmp_path, "once")
    outcomes: list[BaseException | None] = []
    for t in range(3):
        written = threading.Event()
        storage.start_put(
            {"time": t}, big_frame(t), {"t": t}, lambda e, w=written: (outcomes.append(e), w.set())
        )
        assert written.wait(20)
    storage.finish()
    assert failed and outcomes == [None, None, None]
    with open(os.path.join(storage.path, "NDTiff.index"), "rb") as f:
        index, position, entries = f.read(), 0, []
    while position < len(index):  # every entry, also one for coordinates written before
        position, coords, _ = NDTiffIndexEntry.unpack_single_index_entry(index, position)
        entries.append(coords["time"])
    assert sorted(entries) == [0, 1, 2]
    assert_frames(storage.path, [0, 1, 2])


def test_a_frame_refused_after_claiming_a_file_gives_it_back(tmp_path, monkeypatch):
    """Whatever fails between claiming an image file and writing (here the dataset's bookkeeping)
    gives the file and the coordinates back: the frame can be put again, and finish does not wait
    for it (before, it waited forever)."""
    from exengine.storage import ndtiff

    begin, failures = ndtiff._NDTiffDataset.begin_image, []

    def begin_once_failing(dataset, coordinates, image, metadata):
        if not failures:
            failures.append(coordinates)
            raise RuntimeError("bookkeeping failed")
        return begin(dataset, coordinates, image, metadata)

    monkeypatch.setattr(ndtiff._NDTiffDataset, "begin_image", begin_once_failing)
    storage = NDTiffStorage(tmp_path, "back")
    with pytest.raises(RuntimeError, match="bookkeeping failed"):
        storage.put({"time": 0}, big_frame(0), {"t": 0})
    storage.put({"time": 0}, big_frame(0), {"t": 0})
    finishing = threading.Thread(target=storage.finish)
    finishing.start()
    finishing.join(20)
    assert not finishing.is_alive()
    assert_frames(storage.path, [0])


def test_a_disk_full_when_a_second_image_file_is_made_leaves_a_dataset_that_opens(
    mount_tmpfs, monkeypatch
):
    """Frame 0 is written but its file still taken when frame 1 needs a second image file, on a
    full disk: frame 1 is refused with ENOSPC, no part of that file stays (readers open every .tif),
    and the dataset finishes and opens with frame 0 (before, a 0-byte file made it unreadable)."""
    disk = mount_tmpfs("8m")
    release, written = threading.Event(), threading.Event()
    write = ndtiff_files.ImageFile.write

    def held(file, key, image, metadata, then):
        write(file, key, image, metadata, then)
        written.set()
        assert release.wait(20)

    monkeypatch.setattr(ndtiff_files.ImageFile, "write", held)
    storage = NDTiffStorage(disk, "full")
    outcome: list[BaseException | None] = []
    storage.start_put({"time": 0}, big_frame(0), {"t": 0}, outcome.append)
    assert written.wait(20)
    filler = disk / "filler"
    with open(filler, "wb") as f, pytest.raises(OSError):  # another program fills the disk
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with pytest.raises(OSError) as refused:
        storage.start_put({"time": 1}, big_frame(1), {"t": 1}, outcome.append)
    assert refused.value.errno == errno.ENOSPC
    assert image_files(storage.path) == ["full_NDTiffStack.tif"]
    assert not [name for name in os.listdir(storage.path) if name.endswith(".partial")]
    release.set()
    filler.unlink()
    storage.finish()
    assert outcome == [None]
    assert_frames(storage.path, [0])


def test_resume_clears_an_image_file_a_crash_left_before_its_header(tmp_path):
    """A process killed while making an image file leaves it under a ``.partial`` name, which
    readers do not open; resuming removes it."""
    storage = NDTiffStorage(tmp_path, "crash")
    storage.put({"time": 0}, big_frame(0), {"t": 0})
    storage.close()
    leftover = os.path.join(storage.path, "crash_NDTiffStack_1.tif.partial")
    with open(leftover, "wb") as f:
        f.truncate(4 * 1024**2)  # zeros, as ndstorage reserves a file before its header
    assert_frames(storage.path, [0])
    resumed = NDTiffStorage.resume(storage.path)
    assert not os.path.exists(leftover)
    resumed.put({"time": 1}, big_frame(1), {"t": 1})
    resumed.close()
    assert_frames(storage.path, [0, 1])
