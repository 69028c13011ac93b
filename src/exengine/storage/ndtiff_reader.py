"""Read NDTiff datasets (versions 2 and 3, single or multi-resolution, gray or RGB) lazily.

Only the index is read when a dataset opens; frames are read one at a time, on demand, straight from
the TIFF files. Version 3 indexes are parsed here (a truncated last entry of a dataset still being
written is ignored and picked up by :meth:`NDTiffReader.refresh`); version 2 indexes are read with
``ndstorage``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FrameEntry", "NDTiffReader", "find_dataset_root", "is_ndtiff_path", "positive_number"]

INDEX_NAME = "NDTiff.index"
FULL_RESOLUTION = "Full resolution"
#: Beside an NDTiff dataset's TIFFs: its summary with what was learned while acquiring (frames the
#: cameras dropped), written by ``NDTiffStorage`` when it finishes, only when there is something
#: to add (the TIFF's summary was written at the start).
RUN_SUMMARY = "exengine_summary.json"
_EIGHT_BIT, _RGB = 0, 2
_ENTRY_TAIL = struct.Struct("<IIIIIIII")


@dataclass(frozen=True)
class FrameEntry:
    """Where one frame lives: file, pixel offset, size, pixel type, metadata location."""

    filename: str
    pixel_offset: int
    width: int
    height: int
    pixel_type: int
    metadata_offset: int
    metadata_length: int

    @property
    def rgb(self) -> bool:
        return self.pixel_type == _RGB

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.pixel_type in (_EIGHT_BIT, _RGB) else np.uint16)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width, 3) if self.rgb else (self.height, self.width)

    @property
    def end(self) -> int:
        """The offset just past the frame's last byte in its file (pixels or metadata)."""
        return max(
            self.pixel_offset + int(np.prod(self.shape)) * self.dtype.itemsize,
            self.metadata_offset + self.metadata_length,
        )


def find_dataset_root(path: str | os.PathLike[str]) -> str | None:
    """The dataset folder for ``path`` (a dataset folder or the ``NDTiff.index`` inside it), else
    None."""
    path = os.fspath(path)
    if os.path.basename(path) == INDEX_NAME and os.path.isfile(path):
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.basename(folder) == FULL_RESOLUTION:
            folder = os.path.dirname(folder)
        return folder
    if os.path.isdir(path) and (
        os.path.isfile(os.path.join(path, INDEX_NAME))
        or os.path.isfile(os.path.join(path, FULL_RESOLUTION, INDEX_NAME))
    ):
        return os.path.abspath(path)
    return None


def positive_number(mapping: Any, keys: tuple[str, ...]) -> float | None:
    """The first positive number ``mapping`` holds under one of ``keys`` (e.g. a pixel size), else
    None."""
    if isinstance(mapping, dict):
        for key in keys:
            value = mapping.get(key)
            if isinstance(value, (int, float)) and value > 0:
                return float(value)
    return None


def is_ndtiff_path(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is an NDTiff dataset folder or its index file."""
    return find_dataset_root(path) is not None


def _major_version(folder: str) -> int:
    tiffs = sorted(f for f in os.listdir(folder) if f.endswith(".tif"))
    if not tiffs:
        return 3
    with open(os.path.join(folder, tiffs[0]), "rb") as f:
        f.seek(12)
        raw = f.read(4)
    return int.from_bytes(raw, "little") if len(raw) == 4 else 3


class _Level:
    """One resolution level: its folder, index entries and open files."""

    def __init__(self, folder: str, factor: int, version: int) -> None:
        self.folder = folder
        self.factor = factor
        self.version = version
        self.entries: dict[frozenset, FrameEntry] = {}
        self._position = 0
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.summary_metadata: dict[str, Any] = {}
        self.incomplete_tail = False

    def read_index(self) -> int:
        """Read index entries added since the last call; returns how many are new."""
        if self.version < 3:
            return self._read_v2_index()
        path = os.path.join(self.folder, INDEX_NAME)
        with open(path, "rb") as f:
            f.seek(self._position)
            data = f.read()
        added = 0
        position = 0
        while position + 4 <= len(data):
            parsed = _parse_entry(data, position, path, self._position)
            if parsed is None:
                break
            position, axes, entry = parsed
            self.entries[frozenset(axes.items())] = entry
            added += 1
        rest = data[position:]
        # a zero length ends the index
        self.incomplete_tail = bool(rest) and rest[:4] != b"\0\0\0\0"
        self._position += position
        return added

    @property
    def index_bytes(self) -> int:
        """Bytes of the index read as complete entries."""
        return self._position

    def _read_v2_index(self) -> int:
        if self.entries:
            return 0
        import ndstorage

        with contextlib.redirect_stdout(io.StringIO()):
            dataset = ndstorage.Dataset(os.path.dirname(self.folder))
        level = dataset.res_levels[0]
        names = list(dataset.get_channel_names())
        for key, raw in level.index.items():
            axes = dict(key)
            if (
                "channel" in axes
                and isinstance(axes["channel"], int)
                and axes["channel"] < len(names)
            ):
                axes["channel"] = names[axes["channel"]]
            self.entries[frozenset(axes.items())] = FrameEntry(
                raw["filename"],
                raw["pixel_offset"],
                raw["image_width"],
                raw["image_height"],
                raw["pixel_type"],
                raw["metadata_offset"],
                raw["metadata_length"],
            )
        self.summary_metadata = dict(dataset.summary_metadata)
        dataset.close()
        return len(self.entries)

    def _file(self, filename: str) -> Any:
        handle = self._files.get(filename)
        if handle is None:
            handle = self._files[filename] = open(os.path.join(self.folder, filename), "rb")  # noqa: SIM115
        return handle

    def _read(self, filename: str, offset: int, length: int) -> bytes:
        with self._lock:
            handle = self._file(filename)
            return os.pread(handle.fileno(), length, offset)

    def read_frame(self, entry: FrameEntry) -> np.ndarray:
        count = int(np.prod(entry.shape))
        raw = self._read(entry.filename, entry.pixel_offset, count * entry.dtype.itemsize)
        if len(raw) < count * entry.dtype.itemsize:
            raise OSError(
                f"{entry.filename} is truncated: the frame at offset {entry.pixel_offset} is "
                "incomplete"
            )
        return (
            np.frombuffer(raw, dtype=entry.dtype.newbyteorder("<"))
            .reshape(entry.shape)
            .astype(entry.dtype)
        )

    def read_metadata(self, entry: FrameEntry) -> dict[str, Any]:
        raw = self._read(entry.filename, entry.metadata_offset, entry.metadata_length)
        if len(raw) < entry.metadata_length:
            raise OSError(
                f"{entry.filename} is truncated: the metadata at offset {entry.metadata_offset} "
                "is incomplete"
            )
        try:
            metadata: dict[str, Any] = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"{entry.filename} is corrupt: the metadata at offset {entry.metadata_offset} is "
                f"not JSON ({error})"
            ) from None
        return metadata

    def truncated(self) -> dict[str, int]:
        """Frames whose pixels or metadata lie past the end of their file (a file cut short), by
        file name."""
        sizes: dict[str, int] = {}
        cut: dict[str, int] = {}
        for entry in self.entries.values():
            if entry.filename not in sizes:
                path = os.path.join(self.folder, entry.filename)
                sizes[entry.filename] = os.path.getsize(path) if os.path.isfile(path) else 0
            if entry.end > sizes[entry.filename]:
                cut[entry.filename] = cut.get(entry.filename, 0) + 1
        return cut

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


def _parse_entry(
    data: bytes, position: int, path: str, base: int
) -> tuple[int, dict, FrameEntry] | None:
    try:
        (axes_length,) = struct.unpack_from("<I", data, position)
        if axes_length == 0:
            return None
        start = position + 4
        if start + axes_length + 4 > len(data):
            return None
        axes = json.loads(data[start : start + axes_length].decode("utf-8"))
        start += axes_length
        (name_length,) = struct.unpack_from("<I", data, start)
        start += 4
        if start + name_length + _ENTRY_TAIL.size > len(data):
            return None
        filename = data[start : start + name_length].decode("utf-8")
        start += name_length
        offset, width, height, pixel_type, _, md_offset, md_length, _ = _ENTRY_TAIL.unpack_from(
            data, start
        )
    except (UnicodeDecodeError, json.JSONDecodeError, struct.error) as error:
        raise ValueError(f"{path} is corrupt at byte {base + position}: {error}") from error
    if not isinstance(axes, dict) or pixel_type > 6 or width == 0 or height == 0:
        raise ValueError(f"{path} is corrupt at byte {base + position}: implausible entry {axes!r}")
    return (
        start + _ENTRY_TAIL.size,
        axes,
        FrameEntry(filename, offset, width, height, pixel_type, md_offset, md_length),
    )


class NDTiffReader:
    """An NDTiff dataset opened for lazy reading.

    ``levels[0]`` is full resolution; multi-resolution datasets add ``Downsampled_xN`` levels.
    ``axes`` maps every axis to its sorted values (at full resolution).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        root = find_dataset_root(path)
        if root is None:
            raise ValueError(
                f"{os.fspath(path)!r} is not an NDTiff dataset (no {INDEX_NAME} found)"
            )
        self.path = root
        full = os.path.join(root, FULL_RESOLUTION)
        self.multiresolution = os.path.isdir(full)
        folder = full if self.multiresolution else root
        version = _major_version(folder)
        self.levels = [_Level(folder, 1, version)]
        if self.multiresolution and version >= 3:
            factors = sorted(
                int(d.split("_x")[1])
                for d in os.listdir(root)
                if d.startswith("Downsampled_x") and d.split("_x")[1].isdigit()
            )
            self.levels += [
                _Level(os.path.join(root, f"Downsampled_x{f}"), f, version) for f in factors
            ]
        self.version = version
        for level in self.levels:
            level.read_index()
        if self.levels[0].incomplete_tail:
            warnings.warn(
                f"{os.path.join(folder, INDEX_NAME)} ends in an incomplete entry (still being "
                f"written, or truncated); opened the {len(self.levels[0].entries)} complete frames",
                stacklevel=2,
            )
        self.summary_metadata = (
            self.levels[0].summary_metadata if version < 3 else self._read_summary(folder)
        )

    @property
    def complete_index_bytes(self) -> int:
        """The length of the full-resolution index's complete entries (a last entry cut short by a
        crash lies beyond)."""
        return self.levels[0].index_bytes

    def refresh(self) -> int:
        """Pick up frames written since opening (or the last refresh); returns how many are new."""
        new = self.levels[0].read_index()
        for level in self.levels[1:]:
            level.read_index()
        return new

    @staticmethod
    def _read_summary(folder: str) -> dict[str, Any]:
        """The summary metadata: the first TIFF's, or when the writer learned more while acquiring
        (frames dropped), :data:`RUN_SUMMARY`'s."""
        run_summary = os.path.join(folder, RUN_SUMMARY)
        if os.path.isfile(run_summary):
            with (
                contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError),
                open(run_summary, encoding="utf-8") as f,
            ):
                return json.load(f)
        tiffs = sorted(f for f in os.listdir(folder) if f.endswith(".tif"))
        if not tiffs:
            return {}
        with open(os.path.join(folder, tiffs[0]), "rb") as f:
            header = f.read(28)
            if len(header) < 28:
                return {}
            (length,) = struct.unpack_from("<I", header, 24)
            try:
                return json.loads(f.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError):
                warnings.warn(f"Unreadable summary metadata in {tiffs[0]}", stacklevel=2)
                return {}

    @property
    def entries(self) -> dict[frozenset, FrameEntry]:
        """Full-resolution index entries by ``frozenset(coords.items())``."""
        return self.levels[0].entries

    def coordinates(self) -> list[dict[str, Any]]:
        """The coordinates of every frame at full resolution."""
        return [dict(key) for key in self.entries]

    @property
    def axes(self) -> dict[str, list[Any]]:
        values: dict[str, set] = {}
        for key in self.entries:
            for axis, value in key:
                values.setdefault(axis, set()).add(value)
        return {
            axis: sorted(v, key=lambda x: (isinstance(x, str), x)) for axis, v in values.items()
        }

    def read_frame(self, coords: dict[str, Any], level: int = 0) -> np.ndarray:
        """The frame at ``coords``; ``KeyError`` when there is none."""
        lvl, entry = self._entry(coords, level)
        return lvl.read_frame(entry)

    def read_metadata(self, coords: dict[str, Any], level: int = 0) -> dict[str, Any]:
        """The metadata of the frame at ``coords``."""
        lvl, entry = self._entry(coords, level)
        return lvl.read_metadata(entry)

    def _entry(self, coords: dict[str, Any], level: int) -> tuple[_Level, FrameEntry]:
        lvl = self.levels[level]
        entry = lvl.entries.get(frozenset(coords.items()))
        if entry is None:
            raise KeyError(f"No frame at {coords} in {self.path}")
        return lvl, entry

    def first_entry(self) -> FrameEntry:
        """Any frame's entry (all share size and pixel type in practice)."""
        if not self.entries:
            raise ValueError(f"{self.path} holds no frames yet")
        return next(iter(self.entries.values()))

    def truncated(self) -> dict[str, int]:
        """How many full-resolution frames lie past the end of their file, by file name."""
        return self.levels[0].truncated()

    def pixel_size_um(self) -> float | None:
        """Pixel size from the summary or the first frame's metadata, when recorded."""
        pixel = positive_number(self.summary_metadata, ("PixelSize_um", "PixelSizeUm"))
        if pixel is None and self.entries:
            metadata = self.read_metadata(dict(next(iter(self.entries))))
            pixel = positive_number(metadata, ("PixelSizeUm", "PixelSize_um"))
        return pixel

    def z_step_um(self) -> float | None:
        """The z step from the summary metadata, when recorded."""
        return positive_number(self.summary_metadata, ("z-step_um", "z_step_um", "ZStepUm"))

    def close(self) -> None:
        """Close the open files."""
        for level in self.levels:
            level.close()
