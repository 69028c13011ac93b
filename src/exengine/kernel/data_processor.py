"""``DataProcessor``: a processing function run on a ``DataHandler``'s processing thread, and the
forms its outputs may take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .data_coords import DataCoordinates, as_coordinates

__all__ = ["DataProcessor", "Frame", "ProcessFunction"]

#: One frame: its coordinates, data and metadata.
Frame = tuple[DataCoordinates, np.ndarray, Any]
#: What a processor wraps: ``fn(coords, data, metadata)`` returning a frame, a list, or None.
ProcessFunction = Callable[[DataCoordinates, np.ndarray, Any], Any]


class DataProcessor:
    """Wraps a processing function ``fn(coords, data, metadata)`` run on the handler's processing
    thread.

    ``fn`` returns one ``(coords, data, metadata)`` tuple, a list of them, or None to discard the
    frame (or to accumulate it for a later call). When outputs of one call share coordinates, a
    later output whose metadata names another channel than the earlier one (``metadata["Channel"]``,
    as Micro-Manager does) is stored at that ``channel`` coordinate: returning a derived image with
    ``metadata2["Channel"] = "Ratio"`` adds a "Ratio" channel. Outputs that still collide are a
    duplicate-coordinates error (the first is kept).

    ``flush`` (optional) is called with no arguments when the handler finishes and returns what the
    processor still holds, in the same forms as ``fn``: an accumulating processor emits its partial
    results there (marked ``metadata["Partial"] = True``) instead of losing them silently.

    ``stateful`` says whether ``fn`` keeps state between frames (accumulates, averages, counts).
    Stateless processors may run on many workers at once (see :mod:`exengine.dask_processing`);
    stateful ones always see frames one at a time, in acquisition order. Left undeclared (``None``)
    a processor is treated as stateful, the safe choice; ``stateful_declared`` tells the two apart.
    """

    #: False for processors that compute on the handler's thread. True for ones that hand frames to
    #: other workers (see ``DaskProcessor``): they have ``max_in_flight`` (frames handed over at
    #: once) and ``max_batch`` (frames per hand-over), ``submit_batch(frames)`` returning a handle
    #: whose ``result()`` gives, for each frame, its outputs or the exception it raised, and
    #: ``submit_flush()`` returning a handle whose ``result()`` gives the flushed outputs.
    pipelined: bool = False

    def __init__(
        self,
        process_function: ProcessFunction,
        flush: Callable[[], Any] | None = None,
        *,
        stateful: bool | None = None,
    ) -> None:
        if not callable(process_function):
            raise TypeError(
                f"DataProcessor needs a callable (coords, data, metadata), got {process_function!r}"
            )
        if flush is not None and not callable(flush):
            raise TypeError(
                f"DataProcessor flush must be a callable taking no arguments, got {flush!r}"
            )
        if stateful is not None and not isinstance(stateful, bool):
            raise TypeError(f"DataProcessor stateful must be True, False or None, got {stateful!r}")
        self.process_function = process_function
        self.flush_function = flush
        self.stateful_declared = stateful is not None
        self.stateful = True if stateful is None else stateful

    def process(self, coords: DataCoordinates, data: np.ndarray, metadata: Any) -> list[Frame]:
        """Run the function on one frame and return its outputs as a list of frames."""
        return self._outputs(self.process_function(coords, data, metadata))

    def flush(self) -> list[Frame]:
        """Return (and forget) what the processor still holds; called once when the handler
        finishes."""
        if self.flush_function is None:
            return []
        return self._outputs(self.flush_function())

    def close(self) -> None:
        """Release what the processor holds beyond frames (a cluster connection); called after
        ``flush``."""

    def check_plan(
        self, axis_sizes: Mapping[str, int | None], frame_shape: tuple[int, ...] | None = None
    ) -> list[str]:
        """Raise ``ValueError`` (one line) when a setting cannot fit a plan of ``axis_sizes`` (axis
        -> number of values, ``None`` when unknown); return notes on what will happen, e.g. a
        partial last average."""
        return []

    def derive_from_plan(self, axis_sizes: Mapping[str, int | None]) -> None:
        """Fill settings left to ``None`` ("from the plan") from ``axis_sizes``."""

    def output_axes(self, axis_sizes: Mapping[str, int | None]) -> dict[str, int | None]:
        """The axes (and sizes) of the frames this processor emits for a plan of ``axis_sizes``."""
        return dict(axis_sizes)

    def _outputs(self, result: Any) -> list[Frame]:
        if result is None:
            return []
        if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], Mapping):
            return [_as_frame(result, self.process_function)]
        if isinstance(result, list):
            return _separate_channels([_as_frame(item, self.process_function) for item in result])
        raise TypeError(
            f"Processor {_name(self.process_function)} returned {type(result).__name__}; expected "
            "a (coords, data, metadata) tuple, a list of them, or None"
        )

    def __repr__(self) -> str:
        return f"DataProcessor({_name(self.process_function)})"


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _as_frame(item: Any, fn: Any) -> Frame:
    if not (isinstance(item, tuple) and len(item) == 3):
        raise TypeError(
            f"Processor {_name(fn)} returned {item!r}; each output must be (coords, data, metadata)"
        )
    coords, data, metadata = item
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"Processor {_name(fn)} returned data of type {type(data).__name__}; expected a numpy "
            "array"
        )
    return as_coordinates(coords), data, metadata


def _separate_channels(frames: list[Frame]) -> list[Frame]:
    """Move an output that repeats earlier coordinates to the channel its metadata names, when that
    differs from the channel of the output already there."""
    channels: dict[DataCoordinates, Any] = {}
    separated = []
    for coords, data, metadata in frames:
        named = metadata.get("Channel") if isinstance(metadata, Mapping) else None
        if coords in channels and isinstance(named, str) and named != channels[coords]:
            coords = DataCoordinates({**coords, "channel": named})
        channels.setdefault(coords, coords.get("channel", named))
        separated.append((coords, data, metadata))
    return separated
