"""``DataStorage``: the interface every storage backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data_coords import CoordinatesLike, DataCoordinates


@dataclass(frozen=True)
class PlannedData:
    """What an acquisition will store, told to its storage (:meth:`DataStorage.prepare`) and its
    sinks before the first frame.

    ``axis_sizes`` gives each coordinate axis, outermost first, with its number of values (``None``:
    open-ended or not known in advance). ``axis_values`` lists the values of the axes whose values
    are not ``0, 1, ...`` (channel names, position labels). The frame's shape, dtype and pixel size
    (µm) and the dataset's summary metadata are given when known.
    """

    axis_sizes: Mapping[str, int | None]
    axis_values: Mapping[str, tuple[int | str, ...]] = field(default_factory=dict)
    frame_shape: tuple[int, int] | None = None
    dtype: str | None = None
    pixel_size_um: float | None = None
    summary_metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def open_ended_axes(self) -> list[str]:
        """The axes whose number of values is not known in advance."""
        return [axis for axis, size in self.axis_sizes.items() if size is None]


class DataStorage(ABC):
    """Where frames end up: on disk, in memory or elsewhere.

    Data is readable (``get_data``/``get_metadata``/``in``) as soon as ``put`` returns. ``finish``
    marks the dataset complete; ``close`` releases resources. Storages are context managers that
    finish and close on exit.
    """

    @abstractmethod
    def __contains__(self, data_coordinates: CoordinatesLike) -> bool:
        """True when data is stored at ``data_coordinates``."""

    def __getitem__(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        """The data stored at ``data_coordinates`` (same as :meth:`get_data`)."""
        return self.get_data(data_coordinates)

    @abstractmethod
    def get_data(self, data_coordinates: CoordinatesLike) -> np.ndarray:
        """The data stored at ``data_coordinates``; ``KeyError`` when there is none."""

    @abstractmethod
    def get_metadata(self, data_coordinates: CoordinatesLike) -> Any:
        """The metadata stored with ``data_coordinates``; ``KeyError`` when there is none."""

    @abstractmethod
    def put(self, data_coordinates: CoordinatesLike, data: np.ndarray, metadata: Any) -> None:
        """Store ``data`` and ``metadata`` at ``data_coordinates``; readable once this returns."""

    #: True for storages that write to store URLs (``s3://bucket/prefix``) as well as to folders;
    #: front ends refuse a store URL for the others, which would make a local folder named ``s3:``.
    accepts_store_urls: bool = False

    #: How many frames may be in flight in ``start_put`` at once. Storages whose writes wait long on
    #: something else (an object store over the network) set more than 1; the ``DataHandler`` then
    #: keeps that many writes going and reports each frame stored when its own write completes.
    max_writes_in_flight: int = 1

    def start_put(
        self,
        data_coordinates: CoordinatesLike,
        data: np.ndarray,
        metadata: Any,
        on_done: Callable[[BaseException | None], None],
    ) -> None:
        """Start storing a frame, and call ``on_done(None)`` once it is stored and readable, or
        ``on_done(error)`` if it could not be (then the frame is not stored). A frame refused before
        anything is written raises here instead. ``on_done`` may be called from another thread.

        Optional: by default, ``put`` and then ``on_done(None)``.
        """
        self.put(data_coordinates, data, metadata)
        on_done(None)

    def get_coordinates_list(self) -> list[DataCoordinates]:
        """The coordinates of every stored frame, in the order they were stored.

        Optional (ExEngine's interface has no such method): a storage that does not define it cannot
        list or count its frames, and ``len()`` raises a ``TypeError`` that says so.
        """
        raise TypeError(
            f"{type(self).__name__} does not list its frames: define get_coordinates_list() to use "
            "len() or to list the stored coordinates"
        )

    def annotate(self, metadata: Mapping[str, Any]) -> None:
        """Before ``finish``: what was learned while acquiring (frames the cameras dropped and their
        coordinates), to add to the dataset's summary. Optional."""

    def prepare(self, planned: PlannedData) -> None:
        """Told, before the first frame, what the acquisition will store. Optional: a storage may
        lay its dataset out in advance (an array of the planned size, channel names)."""

    @property
    def summary_metadata(self) -> dict[str, Any] | None:
        """Metadata describing the whole dataset, if any."""
        return None

    def finish(self) -> None:
        """No more data will be added."""

    def close(self) -> None:
        """Release the resources the storage holds."""

    def __len__(self) -> int:
        return len(self.get_coordinates_list())

    def __enter__(self) -> DataStorage:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.finish()
        finally:
            self.close()
