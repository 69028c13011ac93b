"""Event capabilities: ``DataProducing``, ``Stoppable`` and ``Abortable`` mix-ins."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .data_coords import (
    CoordinatesLike,
    DataCoordinatesIterator,
    as_coordinates,
    counting_coordinates,
)

if TYPE_CHECKING:
    from .data_handler import DataHandler


class DataProducing:
    """Capability of events that produce data, identified by a ``DataCoordinatesIterator``.

    Frames go to ``data_handler`` through :meth:`put_data`. Without an iterator, frames are numbered
    along the axis ``image``; without a handler, they reach only the event's future
    (``await_data``).
    """

    data_coordinate_iterator: DataCoordinatesIterator
    data_handler: DataHandler | None = None

    def __init__(
        self,
        data_coordinates_iterator: Any = None,
        data_handler: DataHandler | None = None,
        *args: Any,
        data_coordinate_iterator: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        source = (
            data_coordinates_iterator
            if data_coordinates_iterator is not None
            else data_coordinate_iterator
        )
        self.data_coordinate_iterator = (
            counting_coordinates() if source is None else DataCoordinatesIterator.create(source)
        )
        self.data_handler = data_handler

    def put_data(self, data_coordinates: CoordinatesLike, data: Any, metadata: Any) -> None:
        """Hand one frame to the data handler (and to anyone awaiting it on the future)."""
        coords = as_coordinates(data_coordinates)
        future = getattr(self, "_future", None)
        if self.data_handler is not None:
            self.data_handler.put(coords, data, metadata, future)
        elif future is not None:
            future._notify_data(coords, data, metadata)


def _set_flag(event: object, name: str) -> None:
    flag = event.__dict__.get(name)
    if flag is None:
        flag = threading.Event()
        setattr(event, name, flag)
    flag.set()


class Stoppable:
    """Capability of events that can be asked to stop gracefully (finishing what is in hand)."""

    _stop_event: threading.Event | None = None

    def _request_stop(self) -> None:
        _set_flag(self, "_stop_event")

    def is_stop_requested(self) -> bool:
        """True once ``future.stop()`` has been called."""
        flag = self._stop_event
        return flag is not None and flag.is_set()


class Abortable:
    """Capability of events that can be aborted immediately, dropping work not yet done."""

    _abort_event: threading.Event | None = None

    def _request_abort(self) -> None:
        _set_flag(self, "_abort_event")

    def is_abort_requested(self) -> bool:
        """True once ``future.abort()`` has been called."""
        flag = self._abort_event
        return flag is not None and flag.is_set()
