"""``DataStorage``: the interface every storage backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from .data_coords import CoordinatesLike, DataCoordinates


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
