"""The image files of an NDTiff dataset being written (``ImageFiles``).

A frame goes to whichever image file is free: one file while frames come one at a time, a second
beside it while a frame is being written into the first (``NDTiffStorage.start_put``, on writer
threads; see ``_writer_threads``). NDTiff's index names each frame's file, so frames may alternate
between files; a file that reaches ndstorage's 4 GB limit is finished and a new one takes its place.
Image files and the index are written through ``DirectFile``: straight to the OS, whole or not at
all.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from ._preallocate import SpaceReserver

__all__ = [
    "PARTIAL",
    "DirectFile",
    "ImageFile",
    "ImageFiles",
    "Unkept",
    "free_prefix",
    "tidy_image_files",
]

#: Added to the name of an image file until its header is written (readers open every ``.tif``).
PARTIAL = ".partial"


class ImageFile:
    """One image file being written, by one thread at a time: ndstorage's writer, and the disk space
    reserved ahead of it."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.reserver = SpaceReserver()

    def write(
        self, key: frozenset, image: Any, metadata: bytes, then: Callable[[Any], None]
    ) -> None:
        """Write one image, then ``then(index_entry)``. If either fails, the image is undone: the
        next one goes where it would have gone."""
        writer = self.writer
        position = writer.file.tell()
        ifd_offset, first = writer.next_ifd_offset_location, writer.first_ifd
        try:
            then(writer.write_image(key, image, metadata))
        except BaseException:
            writer.buffers.clear()
            writer.file.seek(position)
            writer.next_ifd_offset_location, writer.first_ifd = ifd_offset, first
            raise
        self.reserver.after_write(writer.file)


class ImageFiles:
    """The image files of a dataset being written: up to ``at_once`` of them, each made by
    ``open_writer()`` when needed."""

    def __init__(self, open_writer: Callable[[], Any], at_once: int) -> None:
        self._open_writer = open_writer
        self.at_once = at_once
        self._free: list[ImageFile] = []
        self.files: list[ImageFile] = []  # every file open, in the order they were opened
        self._changed = threading.Condition()

    def take(self, image: Any, metadata: bytes) -> ImageFile:
        """A file with room for ``image`` and ``metadata``, for the caller alone until
        ``give_back``; waits while every file is taken."""
        with self._changed:
            self._changed.wait_for(lambda: self._free or len(self.files) < self.at_once)
            if self._free:
                file = self._free.pop()
                if file.writer.has_space_to_write(image, metadata):
                    return file
                self.files.remove(file)
                file.writer.finished_writing()
            file = ImageFile(self._open_writer())
            self.files.append(file)
            return file

    def give_back(self, file: ImageFile) -> None:
        """``file`` is free for the next image."""
        with self._changed:
            self._free.append(file)
            self._changed.notify()

    def finish(self) -> None:
        """Finish every file (their last image marked as the last, each cut to its data; one
        without an image keeps its header only); raises the first failure, after finishing the
        others."""
        with self._changed:
            files, self.files, self._free = self.files, [], []
        failure: BaseException | None = None
        for file in files:
            try:
                if file.writer.first_ifd:  # no image: no last one to mark
                    file.writer.file.truncate()
                    file.writer.file.close()
                else:
                    file.writer.finished_writing()
            except BaseException as error:  # e.g. a full disk: the other files still finish
                failure = failure or error
                with contextlib.suppress(OSError):
                    file.writer.file.close()
        if failure is not None:
            raise failure


class DirectFile:
    """A file ndstorage writes through, written straight to the OS: each write completes or raises.

    ndstorage writes through buffered files and ignores short writes. Here a write that fails
    part-way (a full disk) is cut back off the file before the error is raised, so neither the image
    file nor the index ever holds part of a write: ndstorage refuses to open an index that ends in
    part of an entry. Nothing waits in a buffer, so every entry written survives a crash of the
    process.
    """

    def __init__(self, opened: io.BufferedIOBase) -> None:
        # writes what ndstorage buffered so far (the image file's header)
        self._raw = opened.detach()
        self.name = self._raw.name

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        start = self._raw.tell()
        written = 0
        try:
            while written < len(view):
                count = self._raw.write(view[written:])
                if not count:
                    raise OSError(errno.EIO, f"Writing {self.name!r} made no progress")
                written += count
        except BaseException:
            try:
                self._raw.truncate(start)
                self._raw.seek(start)
            except OSError:  # a part stays; readers skip an incomplete last index entry
                pass
            raise
        return written

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._raw.truncate(size)

    def flush(self) -> None:
        """Nothing to do: every write went to the OS already."""

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()


class Unkept(dict):
    """A mapping that keeps nothing."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def tidy_image_files(folder: str, entries: Iterable[Any]) -> None:
    """After a crash, before adding frames: cut image files left at their reserved size back to
    their last indexed frame (``entries``: the index's ``FrameEntry`` items), and remove those left
    before their header was whole."""
    ends: dict[str, int] = {}
    for entry in entries:
        ends[entry.filename] = max(ends.get(entry.filename, 0), entry.end)
    for name, end in ends.items():
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.path.getsize(path) > end:
            os.truncate(path, end)
    for name in os.listdir(folder):
        if name.endswith(".tif" + PARTIAL):
            os.remove(os.path.join(folder, name))


def free_prefix(folder: str) -> str:
    """``resume<k>``: the first file name prefix no file in ``folder`` has."""
    names = os.listdir(folder)
    k = 1
    while any(name.startswith(f"resume{k}_") for name in names):
        k += 1
    return f"resume{k}"
