"""``SliderFollow``: moves a viewer's sliders to the newest frame until the user moves one, and
slices each layer once per move (napari would slice it twice)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any


class SliderFollow:
    """The sliders of ``viewer`` as the layer sink moves them (create and use on the GUI thread)."""

    def __init__(self, viewer: Any) -> None:
        self._dims = viewer.dims
        self._duplicate_slice = _duplicate_slicer(viewer)
        #: The sliders' positions by axis after the last move (``None``: not yet).
        self._set: dict[str, int] | None = None

    def follow(self, axes: Sequence[str], newest: Sequence[int]) -> bool:
        """Move the sliders of ``axes`` to ``newest`` unless the user moved one since the last
        move; True if they moved (napari then re-slices every layer)."""
        dims = self._dims
        if self._set is not None and _moved(self._set, _positions(dims)):
            return False
        labels = list(dims.axis_labels)
        step = list(dims.current_step)
        for axis, index in zip(axes, newest, strict=False):
            if axis in labels:
                step[labels.index(axis)] = index
        moved = tuple(step) != tuple(dims.current_step)
        if moved:
            with self._one_slice():
                dims.current_step = tuple(step)
        self._set = _positions(dims)
        return moved

    def _one_slice(self) -> Any:
        """Hold back napari's second slice of every layer while the sliders move (see
        ``_duplicate_slicer``)."""
        if self._duplicate_slice is None:
            return contextlib.nullcontext()
        return self._dims.events.point.blocker(self._duplicate_slice)


def _positions(dims: Any) -> dict[str, int]:
    """The sliders' positions by axis label. The displayed axes have none: napari moves their steps
    when a layer is moved or rescaled, which is not the user moving a slider."""
    labels, step = dims.axis_labels, dims.current_step
    return {labels[i]: step[i] for i in dims.not_displayed}


def _moved(before: Mapping[str, int], now: Mapping[str, int]) -> bool:
    """Whether a slider set before is elsewhere now (axes added since do not count)."""
    return any(before.get(axis, position) != position for axis, position in now.items())


def _duplicate_slicer(viewer: Any) -> Any:
    """napari slices every layer for a new ``current_step`` and again for the ``point`` it implies:
    the viewer's ``_update_layers`` listens to both. That listener, to hold back on ``point``;
    ``None`` if napari changes."""
    update = getattr(viewer, "_update_layers", None)
    events = getattr(getattr(viewer, "dims", None), "events", None)
    emitters = [getattr(events, name, None) for name in ("current_step", "point")]
    if update is None or None in emitters:
        return None
    listens = all(
        any(
            isinstance(cb, tuple) and cb[0]() is viewer and cb[1] == "_update_layers"
            for cb in getattr(emitter, "callbacks", ())
        )
        for emitter in emitters
    )
    return update if listens else None
